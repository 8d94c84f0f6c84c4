// Sink base: filter, exception guard, counters, rate-limited error lines.
#include "varanus/sinks/sink.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <exception>

namespace varanus::sinks {

namespace {

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool contains_ci(const std::vector<std::string>& names, std::string_view name) noexcept {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return iequals(n, name); });
}

bool contains(const std::vector<std::string>& names, std::string_view name) noexcept {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr auto kReportInterval = std::chrono::seconds(10);

void write_stderr(std::string_view line) noexcept {
  std::string s(line);
  s += '\n';
  // One write(2) per line so lines from several threads do not interleave.
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, s.data(), s.size());
}

}  // namespace

bool SinkFilter::accepts(const monitor::Event& e) const noexcept {
  if (!includeEvents.empty() || !excludeEvents.empty()) {
    const std::string_view name = monitor::event_name(e);
    if (!includeEvents.empty() && !contains_ci(includeEvents, name)) return false;
    if (contains_ci(excludeEvents, name)) return false;
  }
  // Topology events are not commands: a selection of commands (failed
  // only, slower than) leaves them out; command, database and sample
  // filters do not apply to them.
  if (e.isTopology()) return !failedOnly && minDurationMicros <= 0;
  if (!e.isCommand()) return connectionEvents && !failedOnly && minDurationMicros <= 0;
  if (failedOnly && e.type != monitor::EventType::commandFailed) return false;
  if (minDurationMicros > 0 &&
      (e.type == monitor::EventType::commandStarted || e.durationMicros < minDurationMicros))
    return false;
  if (!keepHellos && e.hello != monitor::HelloKind::none) return false;
  if (!includeCommands.empty() && !contains_ci(includeCommands, e.commandName)) return false;
  if (!excludeCommands.empty() && contains_ci(excludeCommands, e.commandName)) return false;
  if (!includeDatabases.empty() && !contains(includeDatabases, e.databaseName)) return false;
  if (!excludeDatabases.empty() && contains(excludeDatabases, e.databaseName)) return false;
  if (sampleRate < 1.0) {
    if (sampleRate <= 0.0) return false;
    const std::uint64_t conn = e.connection ? e.connection->connectionId : 0;
    const std::uint64_t h = mix(conn * 0x100000001b3ULL ^ static_cast<std::uint32_t>(e.requestId));
    // Top 53 bits as a uniform double in [0, 1).
    const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
    if (u >= sampleRate) return false;
  }
  return true;
}

Sink::Sink(std::string name, RenderOptions render, SinkFilter filter)
    : name_(std::move(name)), render_(render), filter_(std::move(filter)) {}

Sink::~Sink() = default;

template <class Step>
void Sink::guarded(const char* unknown, Step&& step) noexcept {
  try {
    step();
  } catch (const std::exception& ex) {
    failed(ex.what());
  } catch (...) {
    failed(unknown);
  }
}

void Sink::write(const RenderedEvent& event) noexcept {
  if (closed_) return;
  const monitor::Event& e = event.event();
  // One line per command: its started event is written with the terminal one.
  // mongodb-log: the logging spec publishes no handshake or heartbeat hellos.
  if (e.isCommand() &&
      ((render_.lines == Lines::commands && e.type == monitor::EventType::commandStarted) ||
       (render_.format == Format::mongodbLog && e.hello != monitor::HelloKind::none))) {
    bump(filtered_, 1);
    return;
  }
  // A one-line-per-command sink keeps the topology's changes but not its
  // heartbeats (a few lines per member every heartbeat interval), unless
  // includeEvents names them.
  if (e.isTopology() && render_.lines == Lines::commands &&
      std::string_view(e.commandName).starts_with("serverHeartbeat") &&
      !contains_ci(filter_.includeEvents, e.commandName)) {
    bump(filtered_, 1);
    return;
  }
  if (!filter_.accepts(e)) {
    bump(filtered_, 1);
    return;
  }
  guarded("unknown exception", [&] {
    droppedInWrite_ = false;
    write_(event);
    if (!droppedInWrite_) bump(written_, 1);
  });
}

void Sink::flush() noexcept {
  if (closed_) return;
  guarded("unknown exception in flush", [&] { flush_(); });
}

void Sink::close() noexcept {
  if (closed_) return;
  if (closeDeadline_ == std::chrono::steady_clock::time_point{})
    closeDeadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  guarded("unknown exception in flush", [&] { flush_(); });
  guarded("unknown exception in close", [&] { close_(); });
  closed_ = true;
}

void Sink::reopen() noexcept {
  if (closed_) return;
  guarded("unknown exception in reopen", [&] { reopen_(); });
}

void Sink::failed(std::string_view what) noexcept {
  bump(errors_, 1);
  report(what);
}

void Sink::report(std::string_view what, bool always) noexcept {
  const auto now = std::chrono::steady_clock::now();
  if (!always && lastReport_ != std::chrono::steady_clock::time_point{} &&
      now - lastReport_ < kReportInterval) {
    ++unreported_;
    return;
  }
  try {
    std::string line = "varanus: sink ";
    line += name_;
    line += ": ";
    line += what;
    if (unreported_ != 0) {
      line += " (and ";
      line += std::to_string(unreported_);
      line += " more problems in the last 10 s)";
    }
    if (onError_)
      onError_(line);
    else
      write_stderr(line);
  } catch (...) {
    // Reporting must never throw into the sink thread.
  }
  lastReport_ = now;
  unreported_ = 0;
}

}  // namespace varanus::sinks
