// Per-namespace command statistics. See command_stats.hpp.
#include "varanus/sinks/command_stats.hpp"

#include <algorithm>
#include <bit>
#include <nlohmann/json.hpp>
#include <vector>

namespace varanus::sinks {

std::size_t CommandStatsSink::bucket_of(std::int64_t micros) noexcept {
  if (micros <= 0) return 0;
  const auto v = static_cast<std::uint64_t>(micros);
  const auto e = static_cast<unsigned>(std::bit_width(v) - 1);  // floor(log2 v)
  const auto f = static_cast<unsigned>(((v << 2) >> e) & 3);    // the next two bits
  return std::min<std::size_t>(4 * e + f + 1, kBuckets - 1);
}

std::int64_t CommandStatsSink::bucket_upper(std::size_t bucket) noexcept {
  if (bucket == 0) return 0;
  const std::size_t e = (bucket - 1) / 4, f = (bucket - 1) % 4;
  // Values with floor(log2) e and next bits f lie below (5 + f) * 2^e / 4.
  const auto upper = ((std::uint64_t{5} + f) << e);
  return static_cast<std::int64_t>((upper + 3) / 4);
}

void CommandStatsSink::Figures::add(std::int64_t micros, bool fail, std::uint64_t in,
                                    std::uint64_t out) noexcept {
  ++count;
  if (fail) ++failed;
  totalMicros += micros;
  maxMicros = std::max(maxMicros, micros);
  bytesIn += in;
  bytesOut += out;
  ++histogram[bucket_of(micros)];
}

void CommandStatsSink::Figures::merge(const Figures& o) noexcept {
  count += o.count;
  failed += o.failed;
  totalMicros += o.totalMicros;
  maxMicros = std::max(maxMicros, o.maxMicros);
  bytesIn += o.bytesIn;
  bytesOut += o.bytesOut;
  for (std::size_t i = 0; i < kBuckets; ++i) histogram[i] += o.histogram[i];
}

CommandStatsSink::CommandStatsSink(CommandStatsOptions options)
    : Sink("command-stats"), options_(options) {}

void CommandStatsSink::write_(const RenderedEvent& rendered) {
  const monitor::Event& e = rendered.event();
  if (e.type != monitor::EventType::commandSucceeded && e.type != monitor::EventType::commandFailed)
    return;
  if (e.hello != monitor::HelloKind::none) return;  // handshakes and heartbeats: not workload
  const std::int64_t second =
      std::chrono::duration_cast<std::chrono::seconds>(e.time.time_since_epoch()).count();
  std::lock_guard lock(mutex_);
  auto it = entries_.find(std::make_tuple(std::string_view(e.databaseName),
                                          std::string_view(e.collection),
                                          std::string_view(e.commandName)));
  if (it == entries_.end()) {
    if (entries_.size() + 1 >= options_.maxEntries) {  // the last row is "other"
      ++folded_;
      it = entries_.try_emplace(std::make_tuple("other", "other", "other")).first;
    } else {
      it = entries_.try_emplace(std::make_tuple(e.databaseName, e.collection, e.commandName)).first;
    }
  }
  Entry& entry = it->second;
  const bool failed = e.type == monitor::EventType::commandFailed;
  entry.total.add(e.durationMicros, failed, e.requestBytes, e.replyBytes);
  if (!entry.slots) entry.slots = std::make_unique<std::array<Slot, 60>>();
  Slot& slot = (*entry.slots)[static_cast<std::size_t>(second % 60)];
  if (slot.second != second) {
    if (slot.second > second) return;  // older than the window holds
    slot.second = second;
    slot.figures = Figures{};
  }
  slot.figures.add(e.durationMicros, failed, e.requestBytes, e.replyBytes);
}

namespace {

std::int64_t percentile(const std::array<std::uint32_t, CommandStatsSink::kBuckets>& h,
                        std::uint64_t count, double q, std::int64_t max) {
  if (count == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count) + 0.999999);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    seen += h[i];
    if (seen >= std::max<std::uint64_t>(rank, 1))
      return std::min(CommandStatsSink::bucket_upper(i), max);
  }
  return max;
}

}  // namespace

std::string CommandStatsSink::json(std::chrono::system_clock::time_point now) const {
  using nlohmann::json;
  const std::int64_t nowSecond =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  auto figures = [](const Figures& f) {
    return json{{"count", f.count},
                {"failed", f.failed},
                {"totalMicros", f.totalMicros},
                {"p50Micros", percentile(f.histogram, f.count, 0.50, f.maxMicros)},
                {"p95Micros", percentile(f.histogram, f.count, 0.95, f.maxMicros)},
                {"p99Micros", percentile(f.histogram, f.count, 0.99, f.maxMicros)},
                {"maxMicros", f.maxMicros},
                {"bytesIn", f.bytesIn},
                {"bytesOut", f.bytesOut}};
  };
  std::vector<std::pair<std::int64_t, json>> rows;
  std::lock_guard lock(mutex_);
  for (const auto& [key, entry] : entries_) {
    Figures last10, last60;
    if (entry.slots)
      for (const Slot& s : *entry.slots) {
        if (s.second < 0 || s.second > nowSecond) continue;
        if (s.second > nowSecond - 60) last60.merge(s.figures);
        if (s.second > nowSecond - 10) last10.merge(s.figures);
      }
    json row = figures(entry.total);
    row["database"] = std::get<0>(key);
    row["collection"] = std::get<1>(key);
    row["commandName"] = std::get<2>(key);
    row["last10s"] = figures(last10);
    row["last60s"] = figures(last60);
    rows.emplace_back(entry.total.totalMicros, std::move(row));
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  json commands = json::array();
  for (auto& r : rows) commands.push_back(std::move(r.second));
  return json{{"maxEntries", options_.maxEntries}, {"folded", folded_}, {"commands", commands}}
      .dump();
}

}  // namespace varanus::sinks
