// `varanus replay FILE...` and `varanus sniff -i IFACE`: the proxy's events
// without a proxy, from packet captures or a live interface (src/capture/).
#pragma once

namespace varanus::app {

/// argv[0] is "replay". Exit status: 0 ok, 1 a file could not be read, 2 usage.
int run_replay(int argc, char** argv);
/// argv[0] is "sniff". Runs until SIGINT/SIGTERM. Exit status: 0 ok, 1 the
/// interface could not be opened (e.g. no CAP_NET_RAW), 2 usage.
int run_sniff(int argc, char** argv);

}  // namespace varanus::app
