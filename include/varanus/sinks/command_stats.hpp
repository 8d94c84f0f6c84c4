// varanus::sinks — per-namespace command statistics for the admin
// endpoint's /stats/commands (and `varanus top`).
//
// Per (database, collection, commandName), from the succeeded/failed events
// (hellos left out): count, failed, total time, p50 / p95 / p99 / max
// duration, request and reply bytes — since start, and over the last 10 s
// and 60 s. Durations go into bounded log-scale histograms (4 buckets per
// octave: a percentile is the upper bound of its bucket, at most 25 % above,
// capped by the max). Windows are per-second slots of the event time, 60
// per key. At most `maxEntries` keys: the commands of later ones are
// counted under ("other", "other", "other") and in `folded`.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "varanus/sinks/sink.hpp"

namespace varanus::sinks {

struct CommandStatsOptions {
  std::size_t maxEntries = 256;  ///< distinct (database, collection, commandName) kept
};

class CommandStatsSink : public Sink {
 public:
  explicit CommandStatsSink(CommandStatsOptions options = {});
  DocumentNeed document_need() const noexcept override { return DocumentNeed::none; }

  /// The JSON of /stats/commands at `now`:
  /// {"maxEntries", "folded", "commands": [{"database", "collection",
  /// "commandName", "count", "failed", "totalMicros", "p50Micros", "p95Micros",
  /// "p99Micros", "maxMicros", "bytesIn", "bytesOut", "last10s": {...the
  /// same figures...}, "last60s": {...}}]}, sorted by totalMicros, largest
  /// first. Thread-safe.
  std::string json(
      std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;

  static constexpr std::size_t kBuckets = 128;  ///< 4 per octave: up to 2^32 us (71 min)
  /// The histogram bucket of a duration, and a bucket's upper bound (us).
  static std::size_t bucket_of(std::int64_t micros) noexcept;
  static std::int64_t bucket_upper(std::size_t bucket) noexcept;

 protected:
  void write_(const RenderedEvent& event) override;

 private:
  struct Figures {
    std::uint64_t count = 0;
    std::uint64_t failed = 0;
    std::int64_t totalMicros = 0;
    std::int64_t maxMicros = 0;
    std::uint64_t bytesIn = 0;
    std::uint64_t bytesOut = 0;
    std::array<std::uint32_t, kBuckets> histogram{};
    void add(std::int64_t micros, bool failed, std::uint64_t in, std::uint64_t out) noexcept;
    void merge(const Figures& o) noexcept;
  };
  struct Slot {
    std::int64_t second = -1;  // event time, seconds since the epoch
    Figures figures;
  };
  struct Entry {
    Figures total;
    std::unique_ptr<std::array<Slot, 60>> slots;  // allocated on first use
  };
  CommandStatsOptions options_;
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, std::string>, Entry, std::less<>> entries_;
  std::uint64_t folded_ = 0;
};

}  // namespace varanus::sinks
