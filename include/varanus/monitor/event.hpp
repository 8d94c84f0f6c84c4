// varanus::monitor — the events varanus publishes, as values.
//
// An Event is built on an I/O thread by the Tracker and consumed on a sink
// thread. It holds raw BSON copies (never JSON: rendering happens on the
// sink side) and a shared, immutable snapshot of its connection's metadata.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::monitor {

enum class EventType : std::uint8_t {
  commandStarted,
  commandSucceeded,
  commandFailed,
  connectionOpened,
  connectionClosed,
  /// An SDAM monitoring event of varanus's own topology monitor
  /// (sdam_events.hpp): `commandName` holds its name (topologyOpening,
  /// serverDescriptionChanged, serverHeartbeatSucceeded, ...), `document`
  /// its fields; `connection` is null (no client connection is involved).
  topology,
};
/// "commandStarted", ..., "topology" (the kind; a topology event's line
/// shows its own name: see event_name).
std::string_view to_string(EventType type) noexcept;

/// Hellos that drivers do not publish as commands, labelled so users can filter them.
enum class HelloKind : std::uint8_t {
  none,       ///< an ordinary command
  handshake,  ///< the connection's first hello/isMaster
  heartbeat,  ///< a later hello on the same connection (SDAM monitoring; awaited when streaming)
};
std::string_view to_string(HelloKind kind) noexcept;  ///< "", "handshake", "heartbeat"

/// mongod's slow-query summary of a reply, read by the Tracker from the
/// whole reply (the event's document may be a bounded copy). -1: the reply
/// has no such field (or the summary was not asked for).
struct ReplySummary {
  std::int32_t nReturned = -1;    ///< documents in a cursor batch (firstBatch / nextBatch)
  std::int32_t n = -1;            ///< writes: `n`
  std::int32_t nModified = -1;    ///< update: `nModified`
  std::int32_t nUpserted = -1;    ///< update: entries of `upserted`
  std::int32_t nRemoved = -1;     ///< delete: its `n`
  std::int32_t writeErrors = -1;  ///< entries of `writeErrors`
  bool hasCursor = false;         ///< the reply holds a cursor (cursorId, cursorExhausted)
  std::int64_t cursorId = 0;
};

/// What is known about one client connection. Immutable once published:
/// the Tracker swaps in a new snapshot when the handshake reveals more.
struct ConnectionInfo {
  std::uint64_t connectionId = 0;                  ///< varanus's own number, from 1
  std::string client;                              ///< "host:port" of the driver
  std::string server;                              ///< "host:port" of the upstream
  std::string appName;                             ///< handshake client.application.name
  std::string driver;                              ///< handshake client.driver "name version"
  std::optional<std::int64_t> serverConnectionId;  ///< upstream hello reply's connectionId
};
using ConnectionInfoPtr = std::shared_ptr<const ConnectionInfo>;

/// Document buffers up to this capacity are passed around for reuse (the
/// Dispatcher's ring cells keep them, the Tracker copies into the one a
/// publish hands back); larger ones are freed once used, so no holder keeps
/// the largest document it ever saw.
inline constexpr std::size_t kReusableDocumentCapacity = 4096;

struct Event {
  EventType type = EventType::commandStarted;
  std::chrono::system_clock::time_point time;  ///< wall clock when the tracker saw it (`t`)
  ConnectionInfoPtr connection;

  // Commands.
  std::int32_t requestId = 0;
  std::string commandName;
  std::string databaseName;
  /// The collection the command names (find's value, getMore's
  /// `collection`, a legacy opcode's namespace, ...); empty when none.
  std::string collection;
  /// started: the command (kind-1 sequences merged as arrays); succeeded: the
  /// reply; failed: the reply of a server error (empty for a network failure).
  /// Empty document when redacted (the spec's `{}`), reduced to code/codeName/
  /// errorLabels for a redacted server error.
  wire::BsonBytes document;
  /// `document` is a bounded copy (wire::bounded_copy) that left part of the
  /// original out: a rendering must say the document was cut.
  bool documentCut = false;
  /// ... and whole elements were left out, not only values cut short (which
  /// a type-name rendering does not show).
  bool documentOmitted = false;
  std::int64_t durationMicros = 0;  ///< succeeded/failed: request read -> reply read, monotonic
  HelloKind hello = HelloKind::none;
  bool unacknowledged = false;  ///< moreToCome request (w:0) or legacy write: no reply comes
  bool exhaust = false;         ///< part of an exhaust stream (request or streamed reply)
  bool awaited = false;         ///< streaming hello (topologyVersion + maxAwaitTimeMS)
  bool redacted = false;        ///< a sensitive command: documents emptied
  std::optional<wire::Compressor> compressor;
  /// Command events: the request message's size on the wire (legacy and
  /// exhaust continuations: the message that opened the round, 0 for a
  /// streamed round).
  std::uint32_t requestBytes = 0;
  /// succeeded/failed: the reply message's size (0 when none came).
  std::uint32_t replyBytes = 0;
  ReplySummary summary;  ///< succeeded/failed with a reply, when TrackerOptions::replySummary

  /// failed: the network failure ("connection closed by client", ...).
  /// connectionClosed: the reason. Empty otherwise.
  std::string message;

  // connectionClosed.
  std::uint64_t bytesFromClient = 0;
  std::uint64_t bytesFromServer = 0;
  std::uint64_t commands = 0;

  bool isCommand() const noexcept {
    return type == EventType::commandStarted || type == EventType::commandSucceeded ||
           type == EventType::commandFailed;
  }
  bool networkFailure() const noexcept {
    return type == EventType::commandFailed && document.empty();
  }
  bool isTopology() const noexcept { return type == EventType::topology; }
};

/// The `event` key of the event's line and the name sink filters match:
/// to_string(type), or a topology event's SDAM name (its commandName).
std::string_view event_name(const Event& event) noexcept;

/// Where the Tracker sends events. The sinks' Dispatcher implements it; it
/// must never block (an I/O thread calls it) and may drop, counting drops.
class EventOutput {
 public:
  virtual ~EventOutput() = default;
  virtual void publish(Event&& event) = 0;
};

}  // namespace varanus::monitor
