// varanus::sinks — the Sink interface: where events go.
//
// varanus's answer to PyMongo's monitoring.CommandListener: subclass Sink,
// implement write_(), register it with the Dispatcher (or load it as a
// plugin), and receive every event the proxy sees.
//
// The shape follows spdlog's sinks: a public, non-virtual write() applies
// the sink's filter and guards against exceptions; the protected virtual
// write_() does the work. A sink that throws is counted and reported (rate
// limited), and the other sinks carry on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/monitor/event.hpp"
#include "varanus/sinks/render.hpp"

namespace varanus::sinks {

/// Which events a sink receives. The default accepts everything.
///
/// Command filters apply to command events (started/succeeded/failed).
/// Connection events (connectionOpened/Closed) pass when `connectionEvents`
/// is set and neither `failedOnly` nor `minDurationMicros` asks for a
/// selection of commands only. Topology events (serverDescriptionChanged,
/// serverHeartbeatSucceeded, ...) pass unless `failedOnly` or
/// `minDurationMicros` is set; the event name filters select them by
/// name. (A Lines::commands sink also leaves out the serverHeartbeat*
/// events unless includeEvents names them: see Sink::write.)
struct SinkFilter {
  /// Event names (the `event` key: commandStarted, connectionClosed,
  /// serverHeartbeatStarted, ...) to keep (case-insensitive); empty = all.
  /// Applied before the others.
  std::vector<std::string> includeEvents;
  /// Event names to drop (case-insensitive).
  std::vector<std::string> excludeEvents;
  /// Command names to keep (case-insensitive); empty = all.
  std::vector<std::string> includeCommands;
  /// Command names to drop (case-insensitive); applied after includeCommands.
  std::vector<std::string> excludeCommands;
  /// Databases to keep (exact); empty = all.
  std::vector<std::string> includeDatabases;
  /// Databases to drop (exact).
  std::vector<std::string> excludeDatabases;
  /// > 0: a slow-command log — only succeeded/failed events that took at
  /// least this long (started events are dropped: they have no duration).
  std::int64_t minDurationMicros = 0;
  /// Only commandFailed events.
  bool failedOnly = false;
  /// Fraction of commands kept, 0..1. Decided per (connectionId, requestId),
  /// so a command's started and terminal events are kept or dropped together.
  double sampleRate = 1.0;
  /// Keep handshake and heartbeat hellos (labelled `hello`). Default: kept.
  bool keepHellos = true;
  /// Keep connectionOpened / connectionClosed events.
  bool connectionEvents = true;

  bool accepts(const monitor::Event& event) const noexcept;
};

/// Called with one line of text when a sink fails (no trailing newline).
using ErrorHandler = std::function<void(std::string_view line)>;

/// What a sink needs of the documents (command, reply) in events. The proxy
/// keeps no more than its sinks need: copying a whole 1 MB insert into an
/// event costs the I/O thread, and most sinks show its first kilobyte.
enum class DocumentNeed : std::uint8_t {
  none,      ///< never looks at Event::document (counters); failures are still kept
  rendered,  ///< what its rendering shows (bounded by maxDocumentLength): the default
  whole,     ///< reads Event::document itself and wants it complete
};

/// Base class of every sink.
///
/// @warning Threads: write_(), flush_(), close_() and reopen_() run on the
/// Dispatcher's **sink thread**, never on a proxy I/O thread, and never
/// concurrently with each other. A slow sink therefore delays other sinks
/// (and, once the queue is full, makes the Dispatcher drop events) but it
/// never slows client traffic. Do not block for long in write_(): buffer and
/// write in flush_(), which is called after each batch and at least every
/// ~100 ms when idle. Sinks that share state with other threads (an HTTP
/// endpoint, the application) must synchronise that state themselves.
///
/// @warning Exceptions thrown by write_()/flush_()/close_()/reopen_() are
/// caught, counted (errors()) and reported through the error handler (the
/// first one at once, then at most one line per interval); they never reach
/// the Dispatcher or another sink.
class Sink {
 public:
  explicit Sink(std::string name, RenderOptions render = {}, SinkFilter filter = {});
  virtual ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  /// Applies the filter, then write_() under a guard. Not thread-safe: one
  /// caller (the sink thread) at a time.
  void write(const RenderedEvent& event) noexcept;
  /// Convenience for direct use (tests, embedding): renders on demand.
  void write(const monitor::Event& event) noexcept { write(RenderedEvent(event)); }
  /// Pushes buffered output out (end of a batch, idle ticks, shutdown).
  void flush() noexcept;
  /// Final flush and release of resources; no writes after it. Idempotent.
  void close() noexcept;
  /// Reopens output files (SIGHUP, logrotate). No-op for most sinks.
  void reopen() noexcept;

  /// A name for reports and metrics labels: "stdout", "file:/var/log/x.log", ...
  const std::string& name() const noexcept { return name_; }
  const RenderOptions& render_options() const noexcept { return render_; }
  const SinkFilter& filter() const noexcept { return filter_; }
  /// Set before the sink is registered (not while events flow).
  void set_filter(SinkFilter filter) { filter_ = std::move(filter); }
  void set_render_options(const RenderOptions& render) { render_ = render; }
  /// Where failure lines go; default: stderr. Set before events flow.
  void set_error_handler(ErrorHandler handler) { onError_ = std::move(handler); }
  /// See DocumentNeed. A sink that reads Event::document beyond what its
  /// line shows overrides this with DocumentNeed::whole.
  virtual DocumentNeed document_need() const noexcept { return DocumentNeed::rendered; }

  // Counters, readable from any thread.
  /// Events that passed the filter and were taken by write_() (not dropped).
  std::uint64_t written() const noexcept { return written_.load(std::memory_order_relaxed); }
  std::uint64_t filtered() const noexcept { return filtered_.load(std::memory_order_relaxed); }
  /// Events this sink lost: dispatcher queue full, collector down, buffer full.
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t errors() const noexcept { return errors_.load(std::memory_order_relaxed); }

  /// The Dispatcher reports events lost before they reached this sink.
  void add_dropped(std::uint64_t n) noexcept { bump(dropped_, n); }
  /// The latest time close() may spend flushing (a reader that stopped
  /// must not hold up shutdown): what is not written by then is dropped and
  /// counted. Default: 10 s after close() starts. Set by the Dispatcher.
  void set_close_deadline(std::chrono::steady_clock::time_point t) noexcept { closeDeadline_ = t; }

 protected:
  /// One event that passed the filter. Throw on failure. Besides command
  /// and connection events it may be a topology event (EventType::topology:
  /// the SDAM name in commandName, its fields in document) whose
  /// `connection` is null.
  virtual void write_(const RenderedEvent& event) = 0;
  virtual void flush_() {}
  virtual void close_() {}
  virtual void reopen_() {}

  /// The line in this sink's format (rendered once per format per event).
  std::string_view line(const RenderedEvent& event) const { return event.line(render_); }
  /// For sinks that drop on their own (collector down, buffer full). Called
  /// from write_(), the event is counted as dropped instead of written.
  void count_dropped(std::uint64_t n = 1) noexcept {
    bump(dropped_, n);
    droppedInWrite_ = true;
  }
  /// Reports a problem that is not an exception (rate limited like errors).
  /// `always`: said even within the rate limit's interval (shutdown losses).
  void report(std::string_view what, bool always = false) noexcept;
  /// Events already counted as written that were lost afterwards (a buffer
  /// whose write failed, lines still buffered at the close deadline): moved
  /// from written() to dropped(). Called on the sink thread.
  void count_unwritten(std::uint64_t n) noexcept {
    const std::uint64_t w = written_.load(std::memory_order_relaxed);
    written_.store(w > n ? w - n : 0, std::memory_order_relaxed);
    bump(dropped_, n);
  }
  /// See set_close_deadline(); valid inside close_().
  std::chrono::steady_clock::time_point close_deadline() const noexcept { return closeDeadline_; }

 private:
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // one writer
  }
  void failed(std::string_view what) noexcept;
  /// Runs `step` (write_, flush_, close_, reopen_): what it throws is
  /// counted and reported, never passed on. `unknown` is the report of an
  /// exception that is not a std::exception.
  template <class Step>
  void guarded(const char* unknown, Step&& step) noexcept;

  std::string name_;
  RenderOptions render_;
  SinkFilter filter_;
  ErrorHandler onError_;
  bool closed_ = false;
  std::chrono::steady_clock::time_point closeDeadline_{};
  bool droppedInWrite_ = false;
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> filtered_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> errors_{0};
  // Rate limiting of error lines.
  std::chrono::steady_clock::time_point lastReport_{};
  std::uint64_t unreported_ = 0;
};

/// A sink that calls a function for each event: the quickest way to
/// receive events in an embedding program. Runs on the sink thread.
class CallbackSink : public Sink {
 public:
  using Callback = std::function<void(const RenderedEvent&)>;
  explicit CallbackSink(Callback callback, std::string name = "callback", RenderOptions render = {},
                        SinkFilter filter = {})
      : Sink(std::move(name), render, std::move(filter)), callback_(std::move(callback)) {}
  /// The callback may read Event::document: it gets whole documents.
  DocumentNeed document_need() const noexcept override { return DocumentNeed::whole; }

 protected:
  void write_(const RenderedEvent& event) override { callback_(event); }

 private:
  Callback callback_;
};

}  // namespace varanus::sinks
