// varanus-stub — listeners and the I/O thread pool.
//
// One io_context per thread (no locks on the I/O path); each member's
// acceptor hands accepted sockets round-robin to the contexts, and a session
// lives on its socket's context for its whole life. Shared state (store,
// cursors, topology) is behind mutexes in ServerState.
#pragma once

#include <memory>

#include "options.hpp"

namespace varanus::stub {

/// Binds every member's port, prints the addresses on stdout (one per line,
/// flushed), serves until SIGTERM/SIGINT. Returns the process exit code.
int run_server(const Options& options);

}  // namespace varanus::stub
