// `varanus decode FILE...`: raw wire frames in, one JSON line per message out.
#pragma once

namespace varanus::app {

/// argv[0] is "decode". Returns the process exit status: 0 ok, 1 if any
/// file had an error, 2 on a usage error.
int run_decode(int argc, char** argv);

}  // namespace varanus::app
