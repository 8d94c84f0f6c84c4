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
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

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
  /// Requests in flight (waiting for a reply) a connection may have.
  /// Drivers have one per connection (two with a streaming hello), so the
  /// default is far above any driver; a client pipelining past it (1M
  /// requests to an upstream that never answers cost +250 MB) stops
  /// inspection of the connection (StopCause::backlog): its pending
  /// requests fail with that reason, the relay goes on. 0: no bound.
  std::size_t maxPendingRequests = 1000;
  /// Decompression work inspection may spend per connection, in bytes of
  /// uncompressed output per second (a token bucket holding up to one
  /// second's worth, and always at least one maxMessageSize frame).
  /// OP_COMPRESSED frames past it are relayed without inspection: counted
  /// (TrackerStats::uninspectedCompressed), a request gets no events, a
  /// reply fails its request with the reason. 0: no bound.
  std::uint64_t decompressBytesPerSecond = 64ull << 20;
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
  backlog,    ///< more than maxPendingRequests requests without a reply
};

struct TrackerStats {
  std::uint64_t commands = 0;      ///< started events emitted
  std::uint64_t frames = 0;        ///< whole frames inspected, both directions
  std::uint64_t decodeErrors = 0;  ///< frames that failed to decode (inspection then stops)
  /// OP_COMPRESSED frames relayed without inspection: past the
  /// connection's decompression budget (decompressBytesPerSecond).
  std::uint64_t uninspectedCompressed = 0;
  /// Bytes inflated by large compressed messages reduced as they inflate
  /// (wire::inflate_sparse): less than they hold when inflating stopped early.
  std::uint64_t inflatedBytes = 0;
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
  /// Large messages inspected sparsely (never buffered whole; compressed
  /// ones never inflated whole), both ways.
  std::uint64_t sparse_frames() const noexcept {
    return fromClient_.sparse_frames() + fromServer_.sparse_frames() + sparseInflated_;
  }
  const std::string& stop_reason() const noexcept { return stopReason_; }
  /// Why compressed frames of this connection went uninspected (the first
  /// time it happened), or empty: the proxy says it once.
  const std::string& throttle_reason() const noexcept { return throttleReason_; }
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
  /// Stops inspection with `cause` and `reason`; fails what is pending.
  void halt(StopCause cause, std::string reason, Clock now);
  /// Charges the decompression of an OP_COMPRESSED `frame` to this
  /// connection's budget: false (and counted) when it is spent, and the
  /// frame must go uninspected. True for any other frame.
  bool afford_decompression(std::span<const std::uint8_t> frame, Clock now);
  /// Decodes a whole frame; a large compressed OP_MSG (when events keep
  /// bounded documents) is inflated as a stream into a sparse reduction
  /// (wire::inflate_sparse) held in `keep`, which the Message points into.
  wire::Result<wire::Message> decode_frame(std::span<const std::uint8_t> frame,
                                           const wire::DecodeOptions& opts,
                                           std::vector<std::uint8_t>& keep);
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
  std::string throttleReason_;
  std::uint64_t sparseInflated_ = 0;  // compressed frames reduced as they inflated
  double decompressTokens_ = 0;       // bytes of output the budget allows now
  std::chrono::steady_clock::time_point decompressRefill_{};
  bool decompressPrimed_ = false;  // the bucket was filled (at the first compressed frame)
  StopCause stopCause_ = StopCause::none;
  TrackerStats stats_;
  std::uint64_t bytesFromClient_ = 0;
  std::uint64_t bytesFromServer_ = 0;
  std::unordered_map<std::int32_t, Pending> pending_;  // keyed by the requestID a reply answers
  decltype(pending_)::node_type spareNode_;            // a paired request's node, for the next one
};

}  // namespace varanus::monitor
