// The Dispatcher: a bounded MPSC ring between the I/O threads and one sink
// thread. See dispatcher.hpp for the picture.
//
// Ring: Dmitry Vyukov's bounded queue. Each cell carries a sequence number;
// a producer claims position p with a CAS on enqueuePos_ when cell[p].seq
// == p, moves its Event in, then publishes with seq = p + 1 (release). The
// single consumer reads cell[d] when seq == d + 1, moves the Event out, and
// hands the cell back with seq = d + capacity. Full = the cell at the
// producer's position still holds an unconsumed event (seq < p): drop.
//
// Sleeping: the sink thread sets sleeping_ and re-checks the ring before it
// waits (with a timeout, the tick); a producer that sees sleeping_ takes the
// wake mutex only to notify — at most once per sleep, never per event.
#include "varanus/sinks/dispatcher.hpp"

#include <unistd.h>

#include <bit>
#include <string>

namespace varanus::sinks {

using monitor::Event;

namespace {

// A full fence (store-load ordering for the sleep/wake handshake). GCC's
// ThreadSanitizer rejects atomic_thread_fence: there, a seq_cst RMW on a
// shared atomic stands in, which TSan models.
inline void full_fence() noexcept {
#if defined(__SANITIZE_THREAD__)
  static std::atomic<int> fence{0};
  fence.fetch_add(0, std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace

Dispatcher::Dispatcher(monitor::Stats& stats, DispatcherOptions options)
    : stats_(stats), options_(std::move(options)) {
  const std::size_t n = std::bit_ceil(std::max<std::size_t>(options_.queueSize, 2));
  cells_.reset(new Cell[n]);
  for (std::size_t i = 0; i < n; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  mask_ = n - 1;
  if (options_.batchSize == 0) options_.batchSize = 1;
}

Dispatcher::~Dispatcher() {
  stop();
}

void Dispatcher::add(std::shared_ptr<Sink> sink) {
  if (options_.diagnostics) sink->set_error_handler(options_.diagnostics);
  sinks_.push_back(std::move(sink));
}

void Dispatcher::start() {
  if (started_ || stopped_.load()) return;
  started_ = true;
  thread_ = std::thread([this] { run(); });
}

bool Dispatcher::try_push(Event& event) noexcept {
  std::size_t pos = enqueuePos_.load(std::memory_order_relaxed);
  Cell* cell;
  for (;;) {
    cell = &cells_[pos & mask_];
    const std::size_t seq = cell->seq.load(std::memory_order_acquire);
    const auto dif = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(pos);
    if (dif == 0) {
      if (enqueuePos_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
    } else if (dif < 0) {
      return false;  // full
    } else {
      pos = enqueuePos_.load(std::memory_order_relaxed);
    }
  }
  cell->event = std::move(event);
  cell->seq.store(pos + 1, std::memory_order_release);
  return true;
}

bool Dispatcher::try_pop(Event& out) noexcept {
  Cell& cell = cells_[dequeuePos_ & mask_];
  const std::size_t seq = cell.seq.load(std::memory_order_acquire);
  if (seq != dequeuePos_ + 1) return false;  // empty (or a producer is mid-move)
  out = std::move(cell.event);
  // Leave the cell empty (moved-from strings/vectors hold no memory), so the
  // next producer's move-assignment frees nothing on the I/O thread.
  cell.seq.store(dequeuePos_ + mask_ + 1, std::memory_order_release);
  ++dequeuePos_;
  return true;
}

bool Dispatcher::ring_empty() const noexcept {
  const Cell& cell = cells_[dequeuePos_ & mask_];
  return cell.seq.load(std::memory_order_acquire) != dequeuePos_ + 1;
}

void Dispatcher::publish(Event&& event) {
  stats_.add(stats_.eventsPublished);
  if (stopped_.load(std::memory_order_relaxed) || !try_push(event)) {
    droppedPending_.fetch_add(1, std::memory_order_relaxed);
    droppedTotal_.fetch_add(1, std::memory_order_relaxed);
    stats_.add(stats_.eventsDropped);
    return;
  }
  // Pairs with the fence in run(): either we see sleeping_, or the sink
  // thread sees our event before it waits.
  full_fence();
  if (sleeping_.load(std::memory_order_relaxed) && sleeping_.exchange(false)) {
    std::lock_guard lock(wakeMutex_);
    wake_.notify_one();
  }
}

void Dispatcher::stop() {
  if (stopped_.exchange(true)) return;
  stopping_.store(true);
  if (started_) {
    {
      std::lock_guard lock(wakeMutex_);
      wake_.notify_one();
    }
    thread_.join();
  } else {
    run();  // never started: drain on this thread
  }
}

void Dispatcher::deliver(std::vector<Event>& batch) {
  for (const Event& e : batch) {
    cache_.next();
    const RenderedEvent rendered(e, cache_);
    for (auto& sink : sinks_) sink->write(rendered);
  }
}

void Dispatcher::flush_all() {
  for (auto& sink : sinks_) sink->flush();
}

void Dispatcher::diag(std::string_view line) {
  try {
    if (options_.diagnostics) {
      options_.diagnostics(line);
      return;
    }
    std::string s(line);
    s += '\n';
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, s.data(), s.size());
  } catch (...) {
  }
}

void Dispatcher::housekeeping(std::chrono::steady_clock::time_point now, bool force) {
  if (const std::uint64_t n = droppedPending_.exchange(0, std::memory_order_relaxed); n != 0) {
    for (auto& sink : sinks_) sink->add_dropped(n);
    droppedSinceWarning_ += n;
  }
  if (droppedSinceWarning_ != 0 && (force || now - lastWarning_ >= options_.dropWarningInterval)) {
    const auto tenths =
        (std::chrono::duration_cast<std::chrono::milliseconds>(now - windowStart_).count() + 50) /
        100;
    std::string line = "varanus: sinks: dropped " + std::to_string(droppedSinceWarning_) +
                       " events in the last " + std::to_string(tenths / 10) + "." +
                       std::to_string(tenths % 10) + " s (event queue of " +
                       std::to_string(capacity()) + " full; sinks too slow); " +
                       std::to_string(dropped()) + " dropped in all";
    diag(line);
    droppedSinceWarning_ = 0;
    lastWarning_ = now;
    windowStart_ = now;
  }
  if (reopen_.exchange(false, std::memory_order_relaxed))
    for (auto& sink : sinks_) sink->reopen();
}

void Dispatcher::run() {
  using clock = std::chrono::steady_clock;
  std::vector<Event> batch;
  batch.reserve(options_.batchSize);
  // The first drop warns at once; later ones at most once per interval.
  windowStart_ = clock::now();
  lastWarning_ = windowStart_ - options_.dropWarningInterval;
  auto lastTick = clock::now();
  for (;;) {
    while (batch.size() < options_.batchSize) {
      batch.emplace_back();
      if (!try_pop(batch.back())) {
        batch.pop_back();
        break;
      }
    }
    if (!batch.empty()) {
      deliver(batch);
      flush_all();
      batch.clear();  // events (and their documents) are freed here, off the I/O threads
      const auto now = clock::now();
      lastTick = now;
      housekeeping(now, false);
      continue;
    }
    const auto now = clock::now();
    housekeeping(now, false);
    if (stopping_.load()) break;
    if (now - lastTick >= options_.tick) {
      flush_all();  // idle tick: network sinks retry, reconnect
      lastTick = now;
    }
    std::unique_lock lock(wakeMutex_);
    sleeping_.store(true, std::memory_order_relaxed);
    full_fence();
    if (ring_empty() && !stopping_.load()) wake_.wait_for(lock, options_.tick);
    sleeping_.store(false, std::memory_order_relaxed);
  }
  housekeeping(clock::now(), true);
  for (auto& sink : sinks_) sink->close();  // close() flushes first
}

}  // namespace varanus::sinks
