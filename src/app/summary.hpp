// varanus app — `--summary` of `varanus replay` / `varanus sniff`: what the
// events add up to. Per command name and per namespace: count, failures,
// p50 / p95 / p99 / max duration, bytes (command + reply documents); the
// 10 slowest commands with their documents; errors by code. Printed as a
// table for a terminal, or as one JSON document (--json).
//
// Bounded memory: durations go into log-scale histograms (about 4 % wide
// buckets; the max is exact), started commands are kept only until their
// reply, and only the 10 slowest documents are kept.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "varanus/monitor/event.hpp"

namespace varanus::app {

class Summary {
 public:
  /// `maxJson`: characters of each slow command's documents shown (0: all).
  explicit Summary(std::size_t maxJson = 300) : maxJson_(maxJson) {}
  void add(const monitor::Event& event);

  struct Row {
    std::uint64_t count = 0;
    std::uint64_t failures = 0;
    std::uint64_t bytes = 0;
    std::int64_t maxMicros = 0;
    std::vector<std::uint32_t> buckets;  ///< log-scale duration histogram
    void record(std::int64_t micros, bool failed, std::uint64_t bytes);
    /// The q-th quantile (0..1) of the durations, in microseconds.
    std::int64_t quantile(double q) const;
  };
  struct Slow {
    std::int64_t micros = 0;
    std::uint64_t connectionId = 0;
    std::int32_t requestId = 0;
    std::string commandName;
    std::string ns;
    std::string command;  ///< relaxed JSON
    std::string reply;    ///< relaxed JSON (or the failure)
    bool failed = false;
  };

  const std::map<std::string, Row>& by_command() const noexcept { return byCommand_; }
  const std::map<std::string, Row>& by_namespace() const noexcept { return byNamespace_; }
  /// Slowest first.
  std::vector<Slow> slowest() const;
  /// "11000 DuplicateKey" -> count (writeErrors in replies included).
  const std::map<std::string, std::uint64_t>& errors() const noexcept { return errors_; }

  std::string table() const;
  nlohmann::json to_json() const;

 private:
  struct Started {
    std::string ns;
    std::uint64_t bytes = 0;
    std::string command;
  };
  static constexpr std::size_t kSlowest = 10;
  std::size_t maxJson_;
  std::map<std::string, Row> byCommand_;
  std::map<std::string, Row> byNamespace_;
  std::unordered_map<std::uint64_t, Started> started_;  ///< by connectionId << 32 | requestId
  std::vector<Slow> slow_;                              ///< a min-heap of the slowest
  std::map<std::string, std::uint64_t> errors_;
};

}  // namespace varanus::app
