// varanus-stub — state shared by every connection of the process, and the
// per-connection facts commands need.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "auth.hpp"
#include "cursors.hpp"
#include "options.hpp"
#include "store.hpp"
#include "topology.hpp"

namespace varanus::stub {

class Members;

/// Process-wide fault knobs, changed at run time by {stubFault: 1}.
class Faults {
 public:
  explicit Faults(FaultSettings s) : s_(s) {}
  FaultSettings get() const {
    std::lock_guard lock(mu_);
    return s_;
  }
  void set(FaultSettings s) {
    std::lock_guard lock(mu_);
    s_ = s;
  }

 private:
  mutable std::mutex mu_;
  FaultSettings s_;
};

struct ServerState {
  ServerState(Options o, std::vector<std::string> hosts)
      : options(std::move(o)),
        faults(options.faults),
        topology(options.replSet, std::move(hosts)) {}

  Options options;
  Store store;
  Cursors cursors;
  Faults faults;
  Topology topology;
  /// The members' listeners and connections (stubStopMember, ...); set by
  /// Members::serve before the first connection.
  Members* members = nullptr;
  std::atomic<std::int64_t> nextConnectionId{1};
  std::atomic<std::int64_t> connectionsCurrent{0};
  std::atomic<std::int64_t> connectionsTotal{0};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  /// createUser's users and the SCRAM secrets seen (auth.hpp).
  std::shared_ptr<Users> users = make_users();

  /// Counters shown in serverStatus.varanusStub, so tests can assert which
  /// paths a driver really took (compression, exhaust, streaming hello).
  struct Counters {
    std::array<std::atomic<std::int64_t>, 4> compressedIn{};   ///< by compressor id
    std::array<std::atomic<std::int64_t>, 4> compressedOut{};  ///< by compressor id
    std::atomic<std::int64_t> opMsgIn{0};
    std::atomic<std::int64_t> opQueryIn{0};
    std::atomic<std::int64_t> moreToComeIn{0};       ///< unacknowledged requests
    std::atomic<std::int64_t> exhaustGetMoreOut{0};  ///< getMore replies with moreToCome
    std::atomic<std::int64_t> exhaustOpReplyOut{0};  ///< OP_REPLY batches streamed unasked
    std::atomic<std::int64_t> awaitedHelloOut{0};    ///< replies to awaitable hellos
  } counters;
};

struct SessionInfo {
  std::int64_t connectionId = 0;
  int member = 0;    ///< index of the replica-set member this connection reached
  std::string peer;  ///< client "host:port"
  /// Compressors negotiated in this connection's handshake, in the client's order.
  std::vector<wire::Compressor> compressors;
  /// {stubFault: 1, thisConnection: true}: knobs for this connection only,
  /// closeAfter counted from when they were set.
  std::optional<FaultSettings> faults;
  std::int64_t messagesSinceFaults = 0;
  /// The SCRAM conversation between saslStart (or a speculative one in
  /// the handshake) and saslContinue.
  std::shared_ptr<ScramConversation> scram;
};

}  // namespace varanus::stub
