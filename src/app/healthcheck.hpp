// varanus app — `varanus healthcheck`: the container HEALTHCHECK command.
#pragma once

#include <string>
#include <vector>

namespace varanus::app {

/// `varanus healthcheck [options]` with the proxy's own options (flags,
/// VARANUS_* variables, --config), so it finds the same addresses the
/// proxy uses: GET /healthz on the admin endpoint when there is one,
/// otherwise a TCP connect to the listen address. Prints one line; exit 0
/// when healthy, 1 when not, 2 on a usage or config error.
int run_healthcheck(const std::vector<std::string>& args);

}  // namespace varanus::app
