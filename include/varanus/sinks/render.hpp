// varanus::sinks — turning an Event into one line of JSON.
//
// Two formats, chosen per sink:
//  - `varanus`: the README's "Event lines" table: t, event,
//    connectionId, client, server, serverConnectionId, appName, driver,
//    requestId, commandName, databaseName, command / reply / failure,
//    durationMicros, hello and flags. Documents are embedded as relaxed
//    Extended JSON objects, bounded by maxDocumentLength; a cut document
//    says so with `commandTruncated` / `replyTruncated` (always `true`).
//  - `mongodb-log`: the command logging spec's structured messages
//    ("Command started" / "Command succeeded" / "Command failed",
//    driverConnectionId, serverHost, serverPort, durationMS, ...), documents
//    as relaxed-JSON *strings* cut at maxDocumentLength bytes plus "...".
//
// Every key has one JSON type in every line, keys that do not apply are left
// out rather than written as null.
//
// Rendering is written for speed: one pass into a caller-owned, reused
// std::string (no per-key allocation), documents through
// wire::append_relaxed_json, timestamps formatted by hand. It happens on the
// sink thread, never on an I/O thread.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/monitor/event.hpp"
#include "varanus/wire/bounded.hpp"

namespace varanus::sinks {

/// The line format of a sink.
enum class Format : std::uint8_t {
  varanus,     ///< the README's "Event lines" (the default)
  mongodbLog,  ///< the MongoDB command logging spec's structured messages
};
std::string_view to_string(Format f) noexcept;  ///< "varanus", "mongodb-log"
/// Parses "varanus" / "mongodb-log"; false when unknown.
bool parse_format(std::string_view text, Format& out) noexcept;

/// Redaction on top of the spec's sensitive commands (which the Tracker
/// already empties).
enum class Redaction : std::uint8_t {
  none,    ///< documents as they are
  values,  ///< every leaf value replaced by its BSON type name ("string", "int", ...); keys kept
};
std::string_view to_string(Redaction r) noexcept;  ///< "none", "values"
bool parse_redaction(std::string_view text, Redaction& out) noexcept;

/// Which lines a sink writes for a command.
enum class Lines : std::uint8_t {
  events,    ///< commandStarted, then commandSucceeded / commandFailed (the default)
  commands,  ///< one `"event":"command"` line when it finishes: command, reply or failure,
             ///< outcome, duration and the reply's summary (nReturned, n, cursorId, ...)
};
std::string_view to_string(Lines l) noexcept;  ///< "events", "commands"
bool parse_lines(std::string_view text, Lines& out) noexcept;

/// How documents (command, reply) appear in a line.
enum class Documents : std::uint8_t {
  object,  ///< embedded JSON objects (the default)
  string,  ///< one JSON string each: a log store's mapping sees one type per key
};
std::string_view to_string(Documents d) noexcept;  ///< "object", "string"
bool parse_documents(std::string_view text, Documents& out) noexcept;

/// The Extended JSON flavour of documents (and of the int64 cursorId).
enum class ExtendedJson : std::uint8_t {
  relaxed,    ///< numbers as JSON numbers (the default)
  canonical,  ///< {"$numberInt":..}, {"$numberLong":".."}, {"$numberDouble":".."}: typed
};
std::string_view to_string(ExtendedJson x) noexcept;  ///< "relaxed", "canonical"
bool parse_extended_json(std::string_view text, ExtendedJson& out) noexcept;

/// How a sink wants its lines. Sinks with equal options share one rendering
/// of each event.
struct RenderOptions {
  Format format = Format::varanus;
  /// Bound on each embedded document, in characters (bytes) of JSON text;
  /// 0 = unlimited. Default 1000, the command logging spec's default.
  std::size_t maxDocumentLength = 1000;
  Redaction redaction = Redaction::none;
  Lines lines = Lines::events;
  Documents documents = Documents::object;
  ExtendedJson extendedJson = ExtendedJson::relaxed;

  friend bool operator==(const RenderOptions&, const RenderOptions&) = default;
};

/// What a rendering with these options can show of a document, as a bound
/// for the copy an event keeps (monitor::TrackerOptions::documentBound): a
/// copy with this bound renders byte for byte like the whole document. Unlimited
/// when maxDocumentLength is 0; type names with Redaction::values. With
/// maxDocumentLength L the bound is 2L + 128 characters: the mongodb-log
/// string rendering reads the most (2L + 64, so the cut at L lands in real
/// text), plus 64 of margin.
wire::CopyBound document_copy_bound(const RenderOptions& options) noexcept;

/// Appends the JSON line for `event` (no trailing newline) to `out`. With
/// Lines::commands, a succeeded/failed event renders as one "command" line
/// holding `started`'s command (left out when null).
void render_line(std::string& out, const monitor::Event& event, const RenderOptions& options,
                 const monitor::Event* started = nullptr);

/// Appends `t` as RFC 3339 UTC with microseconds: 2026-11-24T19:15:24.123456Z.
void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t);

/// Appends the JSON of `doc` with every leaf value replaced by its BSON type
/// alias (as MongoDB's $type names them: "string", "int", "long", "double",
/// "objectId", "date", ...). Bounded like append_relaxed_json: stops at
/// `maxLength` bytes (0 = unlimited), closing what is open. Returns true if
/// cut. An invalid document yields "{}".
bool append_type_json(std::string& out, wire::BsonView doc, std::size_t maxLength);

/// Reused storage for the lines of one event, one slot per distinct
/// RenderOptions. The Dispatcher owns one and reuses its buffers for every
/// event, so steady-state rendering allocates nothing.
class RenderCache {
 public:
  /// The line for `event` with `options`, rendered on first use for this
  /// event generation and shared afterwards.
  std::string_view line(const monitor::Event& event, const RenderOptions& options,
                        const monitor::Event* started = nullptr);
  /// Starts a new event: forgets previous lines, keeps the buffers.
  void next() noexcept { ++generation_; }
  /// The keys a connection's lines share (connectionId ... driver),
  /// rendered once per connection snapshot and kept (valid until the next
  /// call).
  std::string_view connection_text(const monitor::ConnectionInfoPtr& connection);

 private:
  struct Connection {
    monitor::ConnectionInfoPtr info;
    std::string text;
  };
  std::array<Connection, 64> connections_;
  struct Slot {
    RenderOptions options;
    std::string text;
    std::uint64_t generation = 0;
  };
  std::vector<std::unique_ptr<Slot>> slots_;  // stable addresses: views stay valid
  std::uint64_t generation_ = 1;
};

/// An event as the sinks receive it: the Event plus its lines, rendered
/// lazily and at most once per RenderOptions however many sinks ask.
class RenderedEvent {
 public:
  /// Shares the caller's cache (the Dispatcher's path); call cache.next()
  /// between events.
  /// `started`: for a succeeded/failed event, its commandStarted event when
  /// known (the command of a Lines::commands line).
  RenderedEvent(const monitor::Event& event, RenderCache& cache,
                const monitor::Event* started = nullptr) noexcept
      : event_(&event), started_(started), cache_(&cache) {}
  /// Stand-alone (tests, direct use): owns a cache of its own.
  explicit RenderedEvent(const monitor::Event& event, const monitor::Event* started = nullptr);

  const monitor::Event& event() const noexcept { return *event_; }
  /// A terminal event's started event, when the Dispatcher kept it (some
  /// sink writes Lines::commands); else null.
  const monitor::Event* started() const noexcept { return started_; }
  /// The JSON line (no newline). Valid until the next event.
  std::string_view line(const RenderOptions& options) const {
    return cache_->line(*event_, options, started_);
  }

 private:
  const monitor::Event* event_;
  const monitor::Event* started_ = nullptr;
  RenderCache* cache_;
  std::shared_ptr<RenderCache> own_;
};

}  // namespace varanus::sinks
