// varanus::monitor — the Tracker: one per client connection, pure (no I/O).
//
// The proxy hands it every byte read from either side, as read. The Tracker
// frames each direction (wire::FrameReader), decodes complete frames and
// pairs each reply with its request by responseTo == requestID; any number
// of requests may be outstanding.
//
// Exhaust: a request with exhaustAllowed (OP_MSG getMore/hello) or an
// OP_QUERY with the Exhaust flag may get a reply stream. Each streamed reply
// has a new requestID and responseTo = the previous reply's requestID; the
// chain stays open while replies carry moreToCome (OP_MSG) or, for a legacy
// exhaust query, while cursorId != 0. Each further reply becomes its own
// synthetic started + succeeded/failed pair (getMore or hello) timed from
// the previous reply, with requestId = the previous reply's requestID.
//
// Every started event gets exactly one terminal event: a reply, the
// unacknowledged shortcut (moreToCome requests), or a network failure when
// the connection closes or inspection stops.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "varanus/monitor/event.hpp"
#include "varanus/wire/bounded.hpp"
#include "varanus/wire/frame.hpp"

namespace varanus::monitor {

struct TrackerOptions {
  std::int32_t maxMessageSize = wire::kDefaultMaxMessageSize;
  /// Copy command/reply documents into events. Off when no sink renders documents.
  bool captureDocuments = true;
  /// How much of each command and (successful) reply an event keeps: what
  /// the sinks' bounded renderings can show (wire/bounded.hpp). Default:
  /// whole documents. Failed replies are always kept whole (their code,
  /// codeName and errmsg come last).
  wire::CopyBound documentBound;
  /// Read each reply's summary (Event::summary: batch size, n, cursor id,
  /// ...). Off when no sink shows it.
  bool replySummary = true;
};

/// The sparse framing budget (wire/sparse.hpp) the Tracker uses with these
/// options: 0 (buffer large messages whole) when events keep whole
/// documents or type-name renderings; else max(64 KiB, 32 x jsonLength).
/// Messages over 4 x the budget are then inspected without buffering them.
std::size_t sparse_budget(const TrackerOptions& o) noexcept;

struct Clock {
  std::chrono::steady_clock::time_point mono;  ///< for durations
  std::chrono::system_clock::time_point wall;  ///< for `t`
  static Clock now() noexcept {
    return {std::chrono::steady_clock::now(), std::chrono::system_clock::now()};
  }
};

/// Why a Tracker stopped inspecting; the proxy counts the two apart.
enum class StopCause : std::uint8_t {
  none,       ///< still inspecting
  oversized,  ///< a message (or a claimed uncompressed size) over maxMessageSize
  malformed,  ///< bytes that do not frame or decode as the wire protocol
};

struct TrackerStats {
  std::uint64_t commands = 0;      ///< started events emitted
  std::uint64_t frames = 0;        ///< whole frames inspected, both directions
  std::uint64_t decodeErrors = 0;  ///< frames that failed to decode (inspection then stops)
};

class Tracker {
 public:
  Tracker(ConnectionInfoPtr info, EventOutput& out, TrackerOptions options = {});

  /// Emits connectionOpened.
  void opened(Clock now);
  /// Bytes read from the client (requests), in any chunking.
  void client_data(std::span<const std::uint8_t> bytes, Clock now);
  /// Bytes read from the upstream (replies), in any chunking.
  void server_data(std::span<const std::uint8_t> bytes, Clock now);
  /// The connection ended: fails every pending request with `reason` as a
  /// network failure, then emits connectionClosed. Idempotent.
  void closed(std::string_view reason, Clock now);

  /// False once a frame failed to decode or framing failed: the proxy keeps
  /// relaying, the tracker ignores further bytes. `why` names the cause.
  bool inspecting() const noexcept { return inspecting_; }
  /// Large messages inspected sparsely (never buffered whole), both ways.
  std::uint64_t sparse_frames() const noexcept {
    return fromClient_.sparse_frames() + fromServer_.sparse_frames();
  }
  const std::string& stop_reason() const noexcept { return stopReason_; }
  StopCause stop_cause() const noexcept { return stopCause_; }
  /// True when nothing is in flight: every byte read so far is part of a
  /// whole message, and no request waits for a reply except heartbeat
  /// hellos (a monitor's, which a closing server may cut off). False once
  /// inspection stopped: then nothing is known. A stopping proxy closes a
  /// quiescent connection at once instead of waiting out the grace period.
  bool quiescent() const noexcept;
  const TrackerStats& stats() const noexcept { return stats_; }
  const ConnectionInfoPtr& info() const noexcept { return info_; }

 private:
  /// A request waiting for its reply (or the next reply of an exhaust chain).
  struct Pending {
    std::string commandName;
    std::string databaseName;
    std::string collection;
    std::uint32_t requestBytes = 0;
    std::chrono::steady_clock::time_point start;
    HelloKind hello = HelloKind::none;
    bool exhaustAllowed = false;  ///< the request allowed an exhaust reply stream
    bool exhaust = false;         ///< this is a streamed continuation
    bool awaited = false;
    bool redacted = false;
    std::optional<wire::Compressor> compressor;
    /// Legacy OP_QUERY/OP_GET_MORE: the OP_REPLY is upconverted to a cursor reply.
    enum class Legacy : std::uint8_t { none, command, find, getMore } legacy = Legacy::none;
    std::string ns;                 ///< "db.coll": legacy cursor replies, exhaust getMore chains
    wire::BsonBytes streamCommand;  ///< hello exhaust chains: the command shown on synthetic starts
    std::uint64_t seq = 0;          ///< arrival order, so closing fails requests in order
  };
  /// Frames what `reader` holds after `bytes` and hands each whole frame
  /// to `Handle` (on_request, on_reply); a framing error stops inspection,
  /// reported as found in `where`.
  template <void (Tracker::*Handle)(std::span<const std::uint8_t>, Clock)>
  void feed(wire::FrameReader& reader, std::span<const std::uint8_t> bytes, std::string_view where,
            Clock now);
  void on_request(std::span<const std::uint8_t> frame, Clock now);
  void on_reply(std::span<const std::uint8_t> frame, Clock now);
  /// Stops inspection for `error`, found in what `where` names ("client
  /// framing", "upstream message"), and fails what is pending.
  void stop(std::string_view where, const wire::Error& error, Clock now);
  Event make_event(EventType type, Clock now) const;
  /// The one way to build a command event from the request `p` it is about:
  /// names, request size, duration since `p.start`, hello kind, exhaust,
  /// awaited, redacted and compressor. Callers add what only they know
  /// (documents, the reply's size and compressor, a failure message). An
  /// rvalue `p` gives up its strings; an lvalue is copied.
  template <class P>
  Event command_event(EventType type, std::int32_t requestId, P&& p, Clock now) const;
  void start_command(Pending p, std::int32_t requestId, wire::BoundedBytes command, bool unacked,
                     wire::BsonBytes impliedReply, Clock now);
  void fail_all(std::string_view message, Clock now);
  void learn_handshake(wire::BsonView body);
  void learn_server_connection_id(wire::BsonView reply);
  /// Publishes, then keeps the document buffer the output hands back (the
  /// Dispatcher swaps in the one its ring cell held) for the next copy:
  /// steady traffic copies documents without allocating.
  void publish(Event&& e);
  wire::BsonBytes take_spare() noexcept { return std::exchange(spare_, {}); }
  std::uint64_t seq_ = 0;
  // The frame being handled: its size on the wire, and whether the sparse
  // framing left part of it out.
  std::uint32_t frameBytes_ = 0;
  bool frameReduced_ = false;
  wire::BsonBytes spare_;

  ConnectionInfoPtr info_;
  EventOutput& out_;
  TrackerOptions options_;
  wire::FrameReader fromClient_;
  wire::FrameReader fromServer_;
  bool inspecting_ = true;
  bool closed_ = false;
  bool handshakeSeen_ = false;
  std::string stopReason_;
  StopCause stopCause_ = StopCause::none;
  TrackerStats stats_;
  std::uint64_t bytesFromClient_ = 0;
  std::uint64_t bytesFromServer_ = 0;
  std::unordered_map<std::int32_t, Pending> pending_;  // keyed by the requestID a reply answers
  decltype(pending_)::node_type spareNode_;            // a paired request's node, for the next one
};

}  // namespace varanus::monitor
