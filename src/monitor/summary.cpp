// Collections named by commands, and reply summaries. See summary.hpp.
#include "varanus/monitor/summary.hpp"

#include <algorithm>
#include <array>
#include <limits>

#include "varanus/wire/bson_walk.hpp"

namespace varanus::monitor {
namespace {

using wire::BsonElement;
using wire::BsonWalk;
namespace bt = wire::bson_type;

// Commands whose first element's value is the collection.
constexpr std::array<std::string_view, 15> kFirstValueNames = {
    "find",  "insert",        "update",        "delete",        "aggregate",
    "count", "distinct",      "findAndModify", "findandmodify", "create",
    "drop",  "createIndexes", "dropIndexes",   "listIndexes",   "collMod"};

bool is_integer(const BsonElement& e) noexcept {
  return e.type == bt::kInt32 || e.type == bt::kInt64 || e.type == bt::kDouble;
}

// A count from any numeric type, clamped to int32: a reply may hold any
// value (NaN, 1e300, 2^40), and converting an out-of-range double is UB
// (found by the capture fuzzer).
std::int32_t as_count(const BsonElement& e) noexcept {
  constexpr auto kMin = std::numeric_limits<std::int32_t>::min();
  constexpr auto kMax = std::numeric_limits<std::int32_t>::max();
  if (e.type == bt::kInt32) return e.as_int32();
  if (e.type == bt::kInt64)
    return static_cast<std::int32_t>(std::clamp<std::int64_t>(e.as_int64(), kMin, kMax));
  const double d = e.as_double();
  if (!(d == d)) return 0;  // NaN
  if (d <= kMin) return kMin;
  if (d >= kMax) return kMax;
  return static_cast<std::int32_t>(d);
}

std::int32_t count_elements(const BsonElement& e) noexcept {
  if (e.type != bt::kArray || !wire::bson_framed(e.as_document())) return -1;
  BsonWalk walk(e.as_document());
  BsonElement x;
  std::int32_t n = 0;
  while (walk.next(x)) ++n;
  return n;
}

}  // namespace

std::string_view command_collection(std::string_view commandName, wire::BsonView body) noexcept {
  if (body.empty() || !wire::bson_framed(body)) return {};
  BsonWalk walk(body);
  BsonElement e;
  if (commandName == "getMore" || commandName == "killCursors") {
    const char* key = commandName == "getMore" ? "collection" : "killCursors";
    return BsonWalk::find(body, key, e) && e.type == bt::kUtf8 ? e.as_string() : std::string_view{};
  }
  bool known = false;
  for (auto n : kFirstValueNames)
    if (n == commandName) {
      known = true;
      break;
    }
  if (!known || !walk.next(e) || e.type != bt::kUtf8) return {};
  return e.as_string();
}

std::string_view namespace_collection(std::string_view ns) noexcept {
  const auto dot = ns.find('.');
  return dot == std::string_view::npos ? std::string_view{} : ns.substr(dot + 1);
}

ReplySummary summarize_reply(std::string_view commandName, wire::BsonView reply) noexcept {
  ReplySummary s;
  const bool write = commandName == "insert" || commandName == "update" || commandName == "delete";
  if (write) {
    s.n = 0;
    s.writeErrors = 0;
    if (commandName == "update") {
      s.nModified = 0;
      s.nUpserted = 0;
    }
  }
  if (reply.empty() || !wire::bson_framed(reply)) return s;
  BsonWalk walk(reply);
  BsonElement e;
  while (walk.next(e)) {
    const std::string_view k = e.key;
    if (k == "cursor" && e.type == bt::kDocument && wire::bson_framed(e.as_document())) {
      BsonWalk cw(e.as_document());
      BsonElement c;
      while (cw.next(c)) {
        if (c.key == "firstBatch" || c.key == "nextBatch") {
          s.nReturned = count_elements(c);
        } else if (c.key == "id" && (c.type == bt::kInt64 || c.type == bt::kInt32)) {
          s.hasCursor = true;
          s.cursorId = c.type == bt::kInt64 ? c.as_int64() : c.as_int32();
        }
      }
    } else if (k == "n" && is_integer(e)) {
      s.n = as_count(e);
    } else if (k == "nModified" && is_integer(e)) {
      s.nModified = as_count(e);
    } else if (k == "upserted") {
      if (const auto n = count_elements(e); n >= 0) s.nUpserted = n;
    } else if (k == "writeErrors") {
      if (const auto n = count_elements(e); n >= 0) s.writeErrors = n;
    }
  }
  if (commandName == "delete") s.nRemoved = s.n;
  return s;
}

}  // namespace varanus::monitor
