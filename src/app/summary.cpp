#include "summary.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/json.hpp"

namespace varanus::app {

namespace {

constexpr double kBucketsPerDoubling = 16.0;

std::size_t bucket_of(std::int64_t micros) {
  return static_cast<std::size_t>(
      std::floor(std::log2(static_cast<double>(std::max<std::int64_t>(micros, 0)) + 1.0) *
                 kBucketsPerDoubling));
}
/// The upper bound of a bucket, in microseconds.
std::int64_t bucket_top(std::size_t b) {
  return static_cast<std::int64_t>(
      std::ceil(std::exp2((static_cast<double>(b) + 1.0) / kBucketsPerDoubling) - 1.0));
}

std::string json_of(const wire::BsonBytes& doc, std::size_t maxJson) {
  if (doc.empty()) return "";
  std::string out;
  wire::append_relaxed_json(out,
                            wire::BsonView{doc.data(), static_cast<std::uint32_t>(doc.size())});
  if (maxJson != 0 && out.size() > maxJson) {
    out.resize(maxJson);
    out += "...";
  }
  return out;
}

/// "db.collection" when the command's first value names a collection, else "db".
std::string namespace_of(const monitor::Event& e) {
  std::string ns = e.databaseName;
  bson_t b;
  if (e.document.size() < 5 ||
      !wire::BsonView{e.document.data(), static_cast<std::uint32_t>(e.document.size())}.init_static(
          &b))
    return ns;
  bson_iter_t it;
  if (bson_iter_init(&it, &b) && bson_iter_next(&it) && BSON_ITER_HOLDS_UTF8(&it)) {
    std::uint32_t len = 0;
    const char* coll = bson_iter_utf8(&it, &len);
    if (len > 0) ns += "." + std::string(coll, len);
  }
  return ns;
}

/// Codes of a failed reply, and of writeErrors / writeConcernError in a reply.
void count_errors(const monitor::Event& e, std::map<std::string, std::uint64_t>& errors) {
  if (e.networkFailure()) {
    ++errors["network: " + e.message];
    return;
  }
  bson_t b;
  if (e.document.size() < 5 ||
      !wire::BsonView{e.document.data(), static_cast<std::uint32_t>(e.document.size())}.init_static(
          &b))
    return;
  // Each lookup from a fresh copy: a search moves the iterator.
  auto code_of = [](const bson_iter_t& parent) {
    bson_iter_t f;
    std::string code = "no code", name;
    bson_iter_t p1 = parent, p2 = parent, p3 = parent;
    if (bson_iter_find_descendant(&p1, "code", &f) && BSON_ITER_HOLDS_NUMBER(&f))
      code = std::to_string(bson_iter_as_int64(&f));
    bson_iter_t n;
    if (bson_iter_find_descendant(&p2, "codeName", &n) && BSON_ITER_HOLDS_UTF8(&n))
      name = bson_iter_utf8(&n, nullptr);
    if (name.empty() && code == "no code") {
      bson_iter_t m;
      if (bson_iter_find_descendant(&p3, "errmsg", &m) && BSON_ITER_HOLDS_UTF8(&m))
        name = std::string(bson_iter_utf8(&m, nullptr)).substr(0, 80);
      return name.empty() ? code : code + ": " + name;
    }
    return name.empty() ? code : code + " " + name;
  };
  if (e.type == monitor::EventType::commandFailed) {
    bson_iter_t it;
    if (bson_iter_init(&it, &b)) ++errors[code_of(it)];
    return;
  }
  bson_iter_t it;
  if (bson_iter_init_find(&it, &b, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it)) {
    bson_iter_t arr;
    if (bson_iter_recurse(&it, &arr)) {
      while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr)) continue;
        bson_iter_t doc;
        if (bson_iter_recurse(&arr, &doc)) ++errors[code_of(doc) + " (writeError)"];
      }
    }
  }
}

std::string micros_text(std::int64_t us) {
  char buf[32];
  if (us < 1000) {
    std::snprintf(buf, sizeof buf, "%lldus", static_cast<long long>(us));
  } else if (us < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%.1fms", static_cast<double>(us) / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.2fs", static_cast<double>(us) / 1e6);
  }
  return buf;
}

bool slower(const Summary::Slow& a, const Summary::Slow& b) {
  return a.micros > b.micros;
}

}  // namespace

void Summary::Row::record(std::int64_t micros, bool failed, std::uint64_t n) {
  ++count;
  if (failed) ++failures;
  bytes += n;
  maxMicros = std::max(maxMicros, micros);
  const std::size_t b = bucket_of(micros);
  if (buckets.size() <= b) buckets.resize(b + 1);
  ++buckets[b];
}

std::int64_t Summary::Row::quantile(double q) const {
  if (count == 0) return 0;
  const auto rank =
      static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count)));  // 1-based
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    seen += buckets[b];
    if (seen >= std::max<std::uint64_t>(rank, 1)) return std::min(bucket_top(b), maxMicros);
  }
  return maxMicros;
}

void Summary::add(const monitor::Event& e) {
  const std::uint64_t key = (e.connection ? e.connection->connectionId << 32 : 0) ^
                            static_cast<std::uint32_t>(e.requestId);
  switch (e.type) {
    case monitor::EventType::commandStarted: {
      Started s;
      s.ns = namespace_of(e);
      s.bytes = e.document.size();
      s.command = json_of(e.document, maxJson_);
      started_[key] = std::move(s);
      return;
    }
    case monitor::EventType::commandSucceeded:
    case monitor::EventType::commandFailed:
      break;
    default:
      return;
  }
  Started s;
  if (auto it = started_.find(key); it != started_.end()) {
    s = std::move(it->second);
    started_.erase(it);
  } else {
    s.ns = e.databaseName;
  }
  const bool failed = e.type == monitor::EventType::commandFailed;
  const std::uint64_t bytes = s.bytes + e.document.size();
  byCommand_[e.commandName].record(e.durationMicros, failed, bytes);
  byNamespace_[s.ns].record(e.durationMicros, failed, bytes);
  count_errors(e, errors_);
  if (slow_.size() < kSlowest || e.durationMicros > slow_.front().micros) {
    Slow x;
    x.micros = e.durationMicros;
    x.connectionId = e.connection ? e.connection->connectionId : 0;
    x.requestId = e.requestId;
    x.commandName = e.commandName;
    x.ns = s.ns;
    x.command = std::move(s.command);
    x.reply = e.networkFailure() ? e.message : json_of(e.document, maxJson_);
    x.failed = failed;
    if (slow_.size() == kSlowest) {
      std::pop_heap(slow_.begin(), slow_.end(), slower);
      slow_.pop_back();
    }
    slow_.push_back(std::move(x));
    std::push_heap(slow_.begin(), slow_.end(), slower);
  }
}

std::vector<Summary::Slow> Summary::slowest() const {
  std::vector<Slow> v = slow_;
  std::sort(v.begin(), v.end(), slower);
  return v;
}

std::string Summary::table() const {
  std::string out;
  char line[512];
  auto section = [&](const char* title, const std::map<std::string, Row>& rows) {
    std::size_t width = std::string_view(title).size();
    for (const auto& [k, r] : rows) width = std::max(width, k.size());
    width = std::min<std::size_t>(width, 48);
    std::snprintf(line, sizeof line, "%-*s %8s %8s %9s %9s %9s %9s %12s\n", static_cast<int>(width),
                  title, "count", "failed", "p50", "p95", "p99", "max", "bytes");
    out += line;
    for (const auto& [k, r] : rows) {
      std::snprintf(
          line, sizeof line, "%-*s %8llu %8llu %9s %9s %9s %9s %12llu\n", static_cast<int>(width),
          k.substr(0, 48).c_str(), static_cast<unsigned long long>(r.count),
          static_cast<unsigned long long>(r.failures), micros_text(r.quantile(0.50)).c_str(),
          micros_text(r.quantile(0.95)).c_str(), micros_text(r.quantile(0.99)).c_str(),
          micros_text(r.maxMicros).c_str(), static_cast<unsigned long long>(r.bytes));
      out += line;
    }
    out += '\n';
  };
  section("command", byCommand_);
  section("namespace", byNamespace_);
  out += "slowest commands:\n";
  int i = 0;
  for (const Slow& s : slowest()) {
    std::snprintf(line, sizeof line, "%2d. %9s %s %s (connection %llu, request %d)%s\n", ++i,
                  micros_text(s.micros).c_str(), s.commandName.c_str(), s.ns.c_str(),
                  static_cast<unsigned long long>(s.connectionId), s.requestId,
                  s.failed ? " FAILED" : "");
    out += line;
    if (!s.command.empty()) out += "      command: " + s.command + "\n";
    if (!s.reply.empty())
      out += std::string(s.failed ? "      failure: " : "      reply:   ") + s.reply + "\n";
  }
  out += "\nerrors by code:\n";
  if (errors_.empty()) out += "  (none)\n";
  for (const auto& [code, n] : errors_) {
    std::snprintf(line, sizeof line, "%8llu  %s\n", static_cast<unsigned long long>(n),
                  code.c_str());
    out += line;
  }
  return out;
}

nlohmann::json Summary::to_json() const {
  auto rows = [](const std::map<std::string, Row>& m) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& [k, r] : m) {
      a.push_back({{"name", k},
                   {"count", r.count},
                   {"failures", r.failures},
                   {"p50Micros", r.quantile(0.50)},
                   {"p95Micros", r.quantile(0.95)},
                   {"p99Micros", r.quantile(0.99)},
                   {"maxMicros", r.maxMicros},
                   {"bytes", r.bytes}});
    }
    return a;
  };
  nlohmann::json slow = nlohmann::json::array();
  for (const Slow& s : slowest()) {
    slow.push_back({{"durationMicros", s.micros},
                    {"connectionId", s.connectionId},
                    {"requestId", s.requestId},
                    {"commandName", s.commandName},
                    {"namespace", s.ns},
                    {"failed", s.failed},
                    {"command", s.command},
                    {s.failed ? "failure" : "reply", s.reply}});
  }
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [code, n] : errors_) errors[code] = n;
  return {{"commands", rows(byCommand_)},
          {"namespaces", rows(byNamespace_)},
          {"slowest", slow},
          {"errors", errors}};
}

}  // namespace varanus::app
