// varanus::sinks — the Dispatcher: between the proxy's I/O threads and the
// sinks.
//
//   I/O threads ── publish(Event&&) ──▶ bounded lock-free ring ──▶ sink thread
//                  (never blocks)          (drop + count when full)   batch: render once per
//                                                                      format, write to every
//                                                                      sink, flush each sink
//
// publish() moves the Event into a preallocated slot of a bounded MPSC ring
// (Vyukov's sequence-numbered cells): one CAS, no lock, no allocation and,
// while events keep coming, no syscall. When the ring is full the event is
// dropped and counted (Stats::eventsDropped, and every sink's dropped()),
// and the sink thread writes a warning at most once per interval saying how
// many were lost. Traffic is never slowed.
//
// Waking the sink thread is what costs: a futex wake per event is a syscall
// and a context switch on the I/O thread's critical path. So the sink
// thread, after draining the ring, *lingers*: it sleeps `linger` (4 ms) on
// its own and drains again, and producers do not wake it (unless the ring
// passes half full). Only when a linger finds the ring empty does it go to
// a deep sleep that the next publish() ends with one futex wake. Under load
// that is no wake-up at all from the I/O threads and one batch (one write(2)
// per file sink) per linger; idle, no wake-up at all but the tick.
//
// The sink thread drains the ring in batches, renders each event's line at
// most once per distinct RenderOptions (sinks with the same format share
// it), hands it to every sink, then calls flush() on each sink so that file
// and socket sinks write a whole batch per syscall.
//
// Who renders: the sink thread runs as SCHED_IDLE, so it only ever takes a
// core that would otherwise be idle: rendering and the write(2) into the
// page cache never take CPU from an I/O thread, the client or mongod on the
// same host. Should every core stay busy, that thread would starve; a second
// thread, the *rescuer* (SCHED_BATCH, an ordinary share of the CPU), sleeps
// until the ring is a quarter full, or events have waited across two of its
// ticks with no batch taken, and then drains it itself. One mutex
// makes whichever of the two holds it the consumer (sinks and the render
// cache are single-threaded; order is kept); the sink thread checks before
// every event whether the rescuer wants the ring and steps aside.
//
// With no sink registered there is no sink thread: publish() only counts.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "varanus/monitor/event.hpp"
#include "varanus/monitor/stats.hpp"
#include "varanus/sinks/sink.hpp"
#include "varanus/wire/bounded.hpp"

namespace varanus::sinks {

struct DispatcherOptions {
  /// Events the ring holds (rounded up to a power of two). Memory is
  /// preallocated: 256 bytes per slot, plus the
  /// documents of queued events.
  std::size_t queueSize = 65536;
  /// Most events taken from the ring before the sinks are flushed.
  std::size_t batchSize = 1024;
  /// Drop warnings: at most one line per interval.
  std::chrono::milliseconds dropWarningInterval{10'000};
  /// The sink thread wakes at least this often (idle flushes, reopen,
  /// reconnects of network sinks).
  std::chrono::milliseconds tick{100};
  /// After draining, the sink thread sleeps this long before it looks again,
  /// without asking to be woken: events published meanwhile cost the I/O
  /// threads no syscall, and reach the sinks at most this late (plus the
  /// rendering). Zero: the sink thread waits to be woken at once.
  std::chrono::microseconds linger{4000};
  /// stop(): how long the sinks may take to write out what they buffered
  /// (a reader that stopped reading must not hold up shutdown); what is
  /// not written by then is dropped, counted and reported.
  std::chrono::milliseconds closeTimeout{10'000};
  /// False: no SCHED_IDLE sink thread, only the rescuer consumes (for tests
  /// of the rescuer: a sink thread that never gets a core).
  bool idleThread = true;
  /// Where warnings and sink failures go (one line, no newline). Default:
  /// stderr. Called on the sink thread.
  std::function<void(std::string_view)> diagnostics;
};

class Dispatcher final : public monitor::EventOutput {
 public:
  explicit Dispatcher(monitor::Stats& stats, DispatcherOptions options = {});
  /// Calls stop().
  ~Dispatcher() override;
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  /// Registers a sink. Before start() only.
  void add(std::shared_ptr<Sink> sink);
  /// What the registered sinks need of event documents, as a bound for
  /// monitor::TrackerOptions::documentBound; nullopt when none needs any
  /// (no sinks, or only counters), so that documents need not be copied.
  /// The largest of the sinks' document_copy_bound (render.hpp).
  std::optional<wire::CopyBound> document_bound() const;
  /// True when a sink shows reply summaries (monitor::TrackerOptions::
  /// replySummary): a Lines::commands sink, or one that reads whole events.
  bool wants_reply_summary() const;
  const std::vector<std::shared_ptr<Sink>>& sinks() const noexcept { return sinks_; }

  /// Starts the sink thread. Events published before start() wait in the ring.
  void start();

  /// Any thread, never blocks, never allocates: moves the event into the
  /// ring, or drops it (counted) when the ring is full or the dispatcher
  /// has stopped. Counts Stats::eventsPublished for every call. With no
  /// sinks registered it only counts (nothing would read the event).
  void publish(monitor::Event&& event) override;

  /// Drains every queued event into the sinks, flushes and closes them, and
  /// joins the sink thread. Call after the producers are done (the proxy
  /// has stopped); events published afterwards are dropped and counted.
  /// Idempotent. The sinks' final flush ends by now + closeTimeout.
  void stop();
  /// stop(), the sinks' final flush ending by `flushDeadline` at the latest.
  void stop(std::chrono::steady_clock::time_point flushDeadline);

  /// For a second stop signal, just before the process exits: delivers what
  /// the ring holds and flushes every sink (their writes never wait), all
  /// by `deadline`. False when the consumer could not be had by then (a
  /// sink thread stuck in a plugin). Any thread.
  bool emergency_flush(std::chrono::steady_clock::time_point deadline);

  /// Asks every sink to reopen its files (SIGHUP). Async-signal-safe: only
  /// sets a flag that the sink thread acts on within one tick.
  void reopen() noexcept { reopen_.store(true, std::memory_order_relaxed); }

  /// Events dropped because the ring was full (or published after stop()).
  std::uint64_t dropped() const noexcept { return droppedTotal_.load(std::memory_order_relaxed); }
  std::size_t capacity() const noexcept { return mask_ + 1; }
  /// Events waiting in the ring now (published, not yet delivered). Any thread.
  std::size_t depth() const noexcept { return hasSinks_ ? backlog() : 0; }
  /// Times a publish() had to wake the sink thread (a futex syscall on the
  /// publishing thread). Far below the events published while they flow.
  std::uint64_t wakeups() const noexcept { return wakeups_.load(std::memory_order_relaxed); }
  /// True while the sink thread is in its deep sleep, which only a
  /// publish() (or stop()) ends. For tests and diagnostics.
  bool sink_thread_asleep() const noexcept;
  /// True when a sink thread runs (start() was called with a sink registered).
  bool running() const noexcept { return thread_.joinable(); }
  /// Times the rescuer took the ring from the starved SCHED_IDLE sink thread
  /// (a quarter full, or events waiting across two of its ticks) and
  /// drained it at normal priority.
  std::uint64_t rescues() const noexcept {
    return static_cast<std::uint64_t>(stats_.sinkRescues.load(std::memory_order_relaxed));
  }
  /// The ring fill at which the rescuer takes over.
  std::size_t rescue_threshold() const noexcept { return std::max<std::size_t>(capacity() / 4, 1); }

 private:
  // Cache-line aligned: a producer filling one cell and the sink thread
  // reading the one before it never share a line.
  struct alignas(64) Cell {
    std::atomic<std::size_t> seq;
    monitor::Event event;
  };
  bool try_push(monitor::Event& event) noexcept;
  /// The next event in the ring, read in place, or null; release() hands
  /// its cell back to the producers.
  const monitor::Event* front() noexcept;
  void release() noexcept;
  bool ring_empty() const noexcept;
  /// Events published and not yet handed back by a consumer (an upper bound).
  std::size_t backlog() const noexcept {
    return enqueuePos_.load(std::memory_order_relaxed) - consumed_.load(std::memory_order_relaxed);
  }
  void run();         // the sink thread (SCHED_IDLE)
  void rescue_run();  // the rescuer (SCHED_BATCH)
  /// With consume_ held: up to one batch delivered and flushed; the count.
  /// `yieldable`: stops early when the rescuer asks for the ring.
  std::size_t drain_batch(bool yieldable);
  /// After both threads are gone (stop()): everything left, then close.
  void final_drain(std::chrono::steady_clock::time_point flushDeadline);
  void deliver(const monitor::Event& event);
  void flush_all();
  void housekeeping(std::chrono::steady_clock::time_point now, bool force);
  void diag(std::string_view line);

  monitor::Stats& stats_;
  DispatcherOptions options_;
  std::vector<std::shared_ptr<Sink>> sinks_;

  std::unique_ptr<Cell[]> cells_;
  std::size_t mask_ = 0;
  alignas(64) std::atomic<std::size_t> enqueuePos_{0};
  alignas(64) std::size_t dequeuePos_ = 0;  // the consumer's (consume_ held)
  // What the sink thread is doing, and the futex word it sleeps on:
  // kBusy (draining), kLingering (a timed sleep producers leave alone unless
  // the ring passes half full), kAsleep (any publish wakes it).
  alignas(64) std::atomic<std::uint32_t> state_{0};
  std::atomic<std::size_t> consumed_{0};  // dequeuePos_ as producers may read it
  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<bool> reopen_{false};
  std::atomic<std::uint64_t> droppedPending_{0};  // not yet added to the sinks' counts
  std::atomic<std::uint64_t> droppedTotal_{0};
  std::atomic<std::uint64_t> wakeups_{0};
  // The rescuer's futex word (kBusy / kAsleep), and its request for the ring
  // (its take-overs are counted in Stats::sinkRescues).
  alignas(64) std::atomic<std::uint32_t> rescueState_{0};
  std::atomic<bool> rescueWanted_{false};

  bool hasSinks_ = false;
  std::thread thread_;
  std::thread rescuer_;
  bool started_ = false;

  // Whoever holds consume_ (the sink thread, the rescuer, or stop() at the
  // end) is the consumer: it alone touches what follows and the sinks.
  std::timed_mutex consume_;
  RenderCache cache_;
  // Lines::commands: started events waiting for their terminal event, by
  // (connectionId, requestId). Bounded: cleared when it reaches the cap.
  static constexpr std::size_t kMaxStartedKept = 65536;
  bool joinCommands_ = false;
  using StartedMap = std::unordered_map<std::uint64_t, monitor::Event>;
  StartedMap startedKept_;
  StartedMap::node_type spareStarted_;
  std::uint64_t droppedSinceWarning_ = 0;
  std::chrono::steady_clock::time_point lastWarning_{};
  std::chrono::steady_clock::time_point windowStart_{};
};

}  // namespace varanus::sinks
