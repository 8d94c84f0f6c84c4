// The Dispatcher: a bounded MPSC ring between the I/O threads and one
// consumer at a time: the sink thread (SCHED_IDLE), or the rescuer when the
// sink thread starves. See dispatcher.hpp for the picture.
//
// Ring: Dmitry Vyukov's bounded queue. Each cell carries a sequence number;
// a producer claims position p with a CAS on enqueuePos_ when cell[p].seq
// == p, puts its Event in, then publishes with seq = p + 1 (release). The
// consumer (whoever holds consume_) reads cell[d] in place when seq == d + 1 and hands the
// cell back with seq = d + capacity. Full = the cell at the producer's
// position still holds an unconsumed event (seq < p): drop.
//
// Events stay in their cells: the consumer never moves one out. So the
// memory of an event (its document buffer, its connection's reference
// count) is only ever touched again by a producer, which takes the old
// buffer back when it overwrites the cell: no allocation on one thread
// freed on the other (glibc's arenas then lock and bounce between cores),
// no reference count bounced between cores for every event.
//
// Sleeping: state_ is both what the sink thread is doing and the futex word
// it sleeps on. Lingering is a timed sleep nobody needs to end (producers
// end it only when the ring is half full). Before a deep sleep the sink
// thread stores kAsleep, fences and re-checks the ring; a producer fences
// after its push and then reads state_: either it sees kAsleep and wakes
// the thread (exchange to kBusy, one FUTEX_WAKE), or the thread sees the
// event. A futex wait on a word that already changed returns at once, so a
// wake between the check and the wait is not lost.
#include "varanus/sinks/dispatcher.hpp"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <string>
#include <thread>

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

constexpr std::uint32_t kBusy = 0;
constexpr std::uint32_t kLingering = 1;
constexpr std::uint32_t kAsleep = 2;

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "the futex word is a plain 32-bit integer");

inline std::uint32_t* futex_word(std::atomic<std::uint32_t>& a) noexcept {
  return reinterpret_cast<std::uint32_t*>(&a);
}

void futex_wake(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, futex_word(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

/// Sleeps while `word` == `asleep`, at most `timeout`. Returns at the
/// timeout (true), on a wake, at once when the word already changed, or on
/// a signal: every case is handled by the caller looking again.
bool futex_sleep(std::atomic<std::uint32_t>& word, std::uint32_t asleep,
                 std::chrono::microseconds timeout) noexcept {
  const auto us = std::max<std::int64_t>(timeout.count(), 1);
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(us / 1'000'000);
  ts.tv_nsec = static_cast<long>((us % 1'000'000) * 1000);
  return ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT_PRIVATE, asleep, &ts, nullptr, 0) != 0 &&
         errno == ETIMEDOUT;
}

}  // namespace

bool Dispatcher::sink_thread_asleep() const noexcept {
  return state_.load(std::memory_order_acquire) == kAsleep;
}

Dispatcher::Dispatcher(monitor::Stats& stats, DispatcherOptions options)
    : stats_(stats), options_(std::move(options)) {
  // The ring (256 bytes a slot, 16 MiB by default) is allocated with the
  // first sink: with none, nothing is ever queued.
  mask_ = std::bit_ceil(std::max<std::size_t>(options_.queueSize, 2)) - 1;
  if (options_.batchSize == 0) options_.batchSize = 1;
  // The first drop warns at once; later ones at most once per interval.
  windowStart_ = std::chrono::steady_clock::now();
  lastWarning_ = windowStart_ - options_.dropWarningInterval;
}

Dispatcher::~Dispatcher() {
  stop();
}

void Dispatcher::add(std::shared_ptr<Sink> sink) {
  if (options_.diagnostics) sink->set_error_handler(options_.diagnostics);
  sinks_.push_back(std::move(sink));
  if (!cells_) {
    const std::size_t n = mask_ + 1;
    cells_.reset(new Cell[n]);
    for (std::size_t i = 0; i < n; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  if (sinks_.back()->render_options().lines == Lines::commands) joinCommands_ = true;
  hasSinks_ = true;
}

bool Dispatcher::wants_reply_summary() const {
  return std::any_of(sinks_.begin(), sinks_.end(), [](const std::shared_ptr<Sink>& s) {
    return s->render_options().lines == Lines::commands ||
           s->document_need() == DocumentNeed::whole;
  });
}

std::optional<wire::CopyBound> Dispatcher::document_bound() const {
  std::optional<wire::CopyBound> bound;
  for (const auto& sink : sinks_) {
    const DocumentNeed need = sink->document_need();
    if (need == DocumentNeed::none) continue;
    if (!bound) bound.emplace();
    const wire::CopyBound needed = document_copy_bound(sink->render_options());
    if (need == DocumentNeed::whole || needed.unlimited()) return wire::CopyBound{};
    bound->jsonLength = std::max(bound->jsonLength, needed.jsonLength);
    bound->typeNames = bound->typeNames || needed.typeNames;
  }
  return bound;
}

void Dispatcher::start() {
  if (started_ || stopped_.load()) return;
  started_ = true;
  if (!hasSinks_) return;  // nothing to deliver to: no thread
  thread_ = std::thread([this] {
    if (!options_.idleThread) return;
    // SCHED_IDLE: this thread runs only on a core nothing else wants, so
    // rendering and writing never take CPU from an I/O thread (or the
    // client, or mongod on the same host). Any thread may lower itself to
    // it; should it fail, the thread keeps the ordinary policy.
    sched_param param{};
    param.sched_priority = 0;
    [[maybe_unused]] const int rc = ::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &param);
    run();
  });
  rescuer_ = std::thread([this] {
    // SCHED_BATCH: an ordinary share of the CPU, without wakeup preemption:
    // when it is needed it must get the CPU, but need not get it at once.
    sched_param param{};
    param.sched_priority = 0;
    [[maybe_unused]] const int rc = ::pthread_setschedparam(::pthread_self(), SCHED_BATCH, &param);
    rescue_run();
  });
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
  // The event moves in; the cell's previous document buffer moves out into
  // the publisher's event, handed back to the publisher (the Tracker copies
  // its next document into it): no copy, and no free of another thread's
  // memory.
  wire::BsonBytes previous = std::move(cell->event.document);
  cell->event = std::move(event);
  event.document = std::move(previous);
  cell->seq.store(pos + 1, std::memory_order_release);
  return true;
}

const Event* Dispatcher::front() noexcept {
  Cell& cell = cells_[dequeuePos_ & mask_];
  const std::size_t seq = cell.seq.load(std::memory_order_acquire);
  if (seq != dequeuePos_ + 1) return nullptr;  // empty (or a producer is mid-write)
  return &cell.event;
}

void Dispatcher::release() noexcept {
  Cell& cell = cells_[dequeuePos_ & mask_];
  // A buffer grown for a large (bounded) document is not kept for ever:
  // cells would hold the largest document each ever saw.
  if (cell.event.document.capacity() > monitor::kReusableDocumentCapacity)
    wire::BsonBytes().swap(cell.event.document);
  cell.seq.store(dequeuePos_ + mask_ + 1, std::memory_order_release);
  ++dequeuePos_;
}

bool Dispatcher::ring_empty() const noexcept {
  // Called by the sink thread without the consumer lock, while the rescuer
  // may be consuming: the position is the one the last batch published
  // (consumed_), never the consumer's own dequeuePos_ (a data race that
  // ThreadSanitizer found). A stale position only makes an empty ring look
  // empty a batch early: the rescuer that holds the ring is draining it.
  const std::size_t pos = consumed_.load(std::memory_order_acquire);
  const Cell& cell = cells_[pos & mask_];
  return cell.seq.load(std::memory_order_acquire) != pos + 1;
}

void Dispatcher::publish(Event&& event) {
  stats_.add(stats_.eventsPublished);
  if (!hasSinks_) return;  // no sink: nothing would ever read it
  if (stopped_.load(std::memory_order_relaxed) || !try_push(event)) {
    droppedPending_.fetch_add(1, std::memory_order_relaxed);
    droppedTotal_.fetch_add(1, std::memory_order_relaxed);
    stats_.add(stats_.eventsDropped);
    return;
  }
  // Pairs with the fences in run() and rescue_run(): either we see kAsleep,
  // or the sleeping thread sees our event before it waits.
  full_fence();
  if (rescueState_.load(std::memory_order_relaxed) == kAsleep && backlog() >= rescue_threshold() &&
      rescueState_.exchange(kBusy) == kAsleep) {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    futex_wake(rescueState_);
  }
  const std::uint32_t s = state_.load(std::memory_order_relaxed);
  if (s == kBusy) return;
  if (s == kLingering) {
    // It will look again within `linger`; wake it early only when the ring
    // could otherwise fill up before then.
    if (backlog() < capacity() / 2) return;
  }
  if (state_.exchange(kBusy) != kBusy) {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    futex_wake(state_);
  }
}

void Dispatcher::stop() {
  stop(std::chrono::steady_clock::now() + options_.closeTimeout);
}

void Dispatcher::stop(std::chrono::steady_clock::time_point flushDeadline) {
  if (stopped_.exchange(true)) return;
  stopping_.store(true);
  if (thread_.joinable()) {
    state_.store(kBusy);
    futex_wake(state_);
    rescueState_.store(kBusy);
    futex_wake(rescueState_);
    thread_.join();
    rescuer_.join();
  }
  // What is left is drained here, at the caller's priority (the sink thread
  // would do it only when a core is idle).
  if (hasSinks_) {
    final_drain(flushDeadline);
  } else {
    housekeeping(std::chrono::steady_clock::now(), true);
  }
}

void Dispatcher::deliver(const Event& e) {
  cache_.next();
  if (!joinCommands_ || !e.isCommand()) {
    const RenderedEvent rendered(e, cache_);
    for (auto& sink : sinks_) sink->write(rendered);
    return;
  }
  // Some sink writes one line per command: keep each started event until
  // its terminal event comes, which renders with it.
  const std::uint64_t key = (e.connection ? e.connection->connectionId << 32 : 0) ^
                            static_cast<std::uint32_t>(e.requestId);
  if (e.type == monitor::EventType::commandStarted) {
    // Terminal events lost to a full ring would leave theirs here for ever.
    if (startedKept_.size() >= kMaxStartedKept) startedKept_.clear();
    // The node (and document buffer) of the last finished command is
    // reused: steady traffic keeps started events without allocating.
    if (spareStarted_.empty()) {
      startedKept_[key] = e;
    } else {
      spareStarted_.key() = key;
      spareStarted_.mapped() = e;
      auto r = startedKept_.insert(std::move(spareStarted_));
      if (!r.inserted) {  // a requestID reused before its reply: the newer wins
        r.position->second = e;
        spareStarted_ = std::move(r.node);
      }
    }
    const RenderedEvent rendered(e, cache_);
    for (auto& sink : sinks_) sink->write(rendered);
    return;
  }
  auto it = startedKept_.find(key);
  const RenderedEvent rendered(e, cache_, it == startedKept_.end() ? nullptr : &it->second);
  for (auto& sink : sinks_) sink->write(rendered);
  if (it != startedKept_.end()) {
    auto node = startedKept_.extract(it);
    if (node.mapped().document.capacity() <= monitor::kReusableDocumentCapacity)
      spareStarted_ = std::move(node);
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

std::size_t Dispatcher::drain_batch(bool yieldable) {
  std::size_t taken = 0;
  while (taken < options_.batchSize) {
    if (yieldable && rescueWanted_.load(std::memory_order_relaxed)) break;
    const Event* e = front();
    if (e == nullptr) break;
    deliver(*e);
    release();
    ++taken;
  }
  if (taken != 0) {
    flush_all();
    consumed_.store(dequeuePos_, std::memory_order_release);
  }
  return taken;
}

void Dispatcher::run() {
  using clock = std::chrono::steady_clock;
  auto lastTick = clock::now();
  bool delivered = false;  // since the last sleep
  for (;;) {
    std::size_t taken = 0;
    if (!rescueWanted_.load(std::memory_order_relaxed)) {
      std::lock_guard lock(consume_);
      taken = drain_batch(true);
      const auto now = clock::now();
      if (taken != 0) {
        lastTick = now;
      } else if (now - lastTick >= options_.tick) {
        flush_all();  // idle tick: network sinks retry, reconnect
        lastTick = now;
      }
      housekeeping(now, false);
    }
    if (stopping_.load()) break;
    if (taken != 0) {
      delivered = true;
      // A full batch: more are waiting. Otherwise the ring was drained:
      // linger at once rather than look again now, which (events arriving
      // while the batch was written) would mostly find one or two and pay
      // a write() for them.
      if (taken == options_.batchSize) continue;
    }
    if (rescueWanted_.load(std::memory_order_relaxed)) {
      // The rescuer has the ring: look again in a while.
      state_.store(kLingering, std::memory_order_relaxed);
      futex_sleep(state_, kLingering, std::max(options_.linger, std::chrono::microseconds(1000)));
      state_.store(kBusy, std::memory_order_relaxed);
      continue;
    }
    if (delivered && options_.linger.count() > 0) {
      // Events are flowing: look again after the linger, unasked.
      delivered = false;
      state_.store(kLingering, std::memory_order_relaxed);
      futex_sleep(state_, kLingering, options_.linger);
      state_.store(kBusy, std::memory_order_relaxed);
      continue;
    }
    delivered = false;
    state_.store(kAsleep, std::memory_order_relaxed);
    full_fence();
    if (ring_empty() && !stopping_.load())
      futex_sleep(state_, kAsleep,
                  std::chrono::duration_cast<std::chrono::microseconds>(options_.tick));
    state_.store(kBusy, std::memory_order_relaxed);
  }
}

void Dispatcher::rescue_run() {
  std::size_t seen = consumed_.load(std::memory_order_relaxed);
  bool pending = false;  // events were waiting at the last look
  for (;;) {
    rescueState_.store(kAsleep, std::memory_order_relaxed);
    full_fence();
    bool looked = false;  // a timed look, not a wake
    if (!stopping_.load() && backlog() < rescue_threshold())
      looked = futex_sleep(rescueState_, kAsleep,
                           std::chrono::duration_cast<std::chrono::microseconds>(options_.tick));
    rescueState_.store(kBusy, std::memory_order_relaxed);
    if (stopping_.load()) break;
    // Two reasons to step in: a quarter of the ring waiting, or events
    // waiting at two looks a tick apart with no batch taken in between (a
    // trickle of events would otherwise wait for the ring to fill).
    const std::size_t consumed = consumed_.load(std::memory_order_relaxed);
    const bool waiting = backlog() != 0;
    const bool stalled = looked && pending && waiting && consumed == seen;
    if (looked) pending = waiting;
    seen = consumed;
    if (backlog() < rescue_threshold() && !stalled) continue;
    // The sink thread is starved (every core busy): take the ring from it
    // (it steps aside before its next event) and drain it at our priority.
    rescueWanted_.store(true, std::memory_order_relaxed);
    {
      std::lock_guard lock(consume_);
      stats_.add(stats_.sinkRescues);
      while (!stopping_.load() && drain_batch(false) != 0) {
      }
      housekeeping(std::chrono::steady_clock::now(), false);
      seen = consumed_.load(std::memory_order_relaxed);
    }
    rescueWanted_.store(false, std::memory_order_relaxed);
  }
}

bool Dispatcher::emergency_flush(std::chrono::steady_clock::time_point deadline) {
  if (!hasSinks_) return true;
  std::unique_lock lock(consume_, std::defer_lock);
  // try_lock in a loop, not try_lock_until: that one is
  // pthread_mutex_clocklock, which GCC 12's ThreadSanitizer does not
  // intercept (it then reports the unlock as one of an unlocked mutex).
  while (!lock.try_lock()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  while (std::chrono::steady_clock::now() < deadline && drain_batch(false) != 0) {
  }
  flush_all();
  return true;
}

void Dispatcher::final_drain(std::chrono::steady_clock::time_point flushDeadline) {
  std::lock_guard lock(consume_);
  while (drain_batch(false) != 0) {
  }
  housekeeping(std::chrono::steady_clock::now(), true);
  for (auto& sink : sinks_) {
    sink->set_close_deadline(flushDeadline);
    sink->close();  // flushes first, waiting for a slow reader until the deadline
  }
}

}  // namespace varanus::sinks
