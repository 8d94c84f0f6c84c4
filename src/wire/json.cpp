// BSON -> relaxed Extended JSON, written straight into the caller's string.
//
// Values are those of libbson's bson_as_relaxed_extended_json (the tests
// compare both parsed), written compact. The budget (JsonOptions::maxLength)
// is enforced per token: an element that does not fit is rolled back whole
// (its comma and key too), except strings, which are cut on a code point
// boundary and closed. Then every open array/object is closed, so the output
// stays valid JSON; the closers may run past the budget by the nesting depth.
#include "varanus/wire/json.hpp"

#include <bson/bson.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "varanus/wire/bson_walk.hpp"

namespace varanus::wire {

namespace {

constexpr char kHex[] = "0123456789abcdef";

/// The output: the caller's std::string, written through a raw pointer.
/// std::string's own appends are out-of-line calls with checks each; the
/// writer makes dozens of tiny appends per document, so this keeps the
/// string sized ahead (its bytes past `used_` are scratch) and trims it to
/// what was written when done.
class Out {
 public:
  explicit Out(std::string& s, std::size_t expect) : s_(s), used_(s.size()) {
    reserve_more(expect + 64);
  }
  ~Out() { s_.resize(used_); }
  Out(const Out&) = delete;
  Out& operator=(const Out&) = delete;

  std::size_t size() const noexcept { return used_; }
  char* data() noexcept { return data_; }
  void append(const char* p, std::size_t n) {
    if (cap_ - used_ < n) reserve_more(n);
    std::memcpy(data_ + used_, p, n);
    used_ += n;
  }
  Out& operator+=(char c) {
    if (used_ == cap_) reserve_more(1);
    data_[used_++] = c;
    return *this;
  }
  Out& operator+=(std::string_view v) {
    append(v.data(), v.size());
    return *this;
  }
  Out& operator+=(const char* z) { return *this += std::string_view(z); }
  /// Grows by n bytes, with `slack` more writable past them (scratch), and
  /// returns where the n bytes go.
  char* extend(std::size_t n, std::size_t slack) {
    if (cap_ - used_ < n + slack) reserve_more(n + slack);
    char* at = data_ + used_;
    used_ += n;
    return at;
  }
  /// Shrinks (rollback) or grows (the new bytes are then written by the caller).
  void resize(std::size_t n) {
    if (n > cap_) reserve_more(n - used_);
    used_ = n;
  }

 private:
  void reserve_more(std::size_t n) {
    const std::size_t want = std::max(used_ + n, 2 * cap_);
    s_.resize(want);
    data_ = s_.data();
    cap_ = want;
  }
  std::string& s_;
  char* data_ = nullptr;
  std::size_t used_;
  std::size_t cap_ = 0;
};

// ----- string escaping -------------------------------------------------

// Length of the valid UTF-8 sequence starting at p (lead byte >= 0x80), or 0.
std::size_t utf8_seq(const unsigned char* p, std::size_t n) noexcept {
  const unsigned char c = p[0];
  if (c >= 0xC2 && c <= 0xDF) return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;  // overlong
    if (c == 0xED && p[1] > 0x9F) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;  // overlong
    if (c == 0xF4 && p[1] > 0x8F) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

// The letter of a two-character escape (\" \\ \n \r \t \b \f), or 0 when
// the byte has none (other controls take \u00XX).
constexpr char short_escape(unsigned char c) noexcept {
  switch (c) {
    case '"':
      return '"';
    case '\\':
      return '\\';
    case '\n':
      return 'n';
    case '\r':
      return 'r';
    case '\t':
      return 't';
    case '\b':
      return 'b';
    case '\f':
      return 'f';
    default:
      return 0;
  }
}

// Bytes that need more than a plain copy: controls, '"', '\\', non-ASCII.
constexpr bool special_byte(unsigned char c) noexcept {
  return c < 0x20 || c == '"' || c == '\\' || c >= 0x80;
}
constexpr auto kSpecial = [] {
  std::array<bool, 256> t{};
  for (unsigned c = 0; c < 256; ++c) t[c] = special_byte(static_cast<unsigned char>(c));
  return t;
}();
inline bool special(unsigned char c) noexcept {
  return kSpecial[c];
}

// The special-byte flags of the 8 bytes in v: a byte's high bit is set when
// it is >= 0x80, below 0x20, '"' or '\\'. The borrow tricks may also flag
// bytes *after* (above) a flagged one, never before it, so the lowest flag
// is exact, and bytes above a position never change the flags below it.
[[gnu::always_inline]] inline std::uint64_t special_flags(std::uint64_t v) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t highs = 0x8080808080808080ULL;
  const std::uint64_t q = v ^ (ones * '"');
  const std::uint64_t b = v ^ (ones * '\\');
  return (v | ((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
}

// Index of the first special byte in p[i, n), or n. Eight bytes at a time
// (SWAR). `readable` (>= n) is how many bytes from p may be read: a tail
// shorter than 8 is then read as one word, its flags past n masked off.
[[gnu::always_inline]] inline std::size_t plain_run_end(const unsigned char* p, std::size_t i,
                                                        std::size_t n,
                                                        std::size_t readable) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    while (i + 8 <= n) {
      std::uint64_t v;
      std::memcpy(&v, p + i, 8);
      if (const std::uint64_t flags = special_flags(v); flags != 0)
        return i + static_cast<std::size_t>(std::countr_zero(flags)) / 8;
      i += 8;
    }
    if (i < n && i + 8 <= readable) {
      std::uint64_t v;
      std::memcpy(&v, p + i, 8);
      const std::uint64_t flags = special_flags(v) & ((std::uint64_t{1} << (8 * (n - i))) - 1);
      return flags != 0 ? i + static_cast<std::size_t>(std::countr_zero(flags)) / 8 : n;
    }
  }
  while (i < n && !special(p[i])) ++i;
  return i;
}
inline std::size_t plain_run_end(const unsigned char* p, std::size_t i, std::size_t n) noexcept {
  return plain_run_end(p, i, n, n);
}

/// Appends the escaped body of a JSON string (no quotes). With a limit, stops
/// before the unit that would pass `limit` (out.size() never exceeds it) and
/// returns false.
bool escape_into(Out& out, const char* s, std::size_t n, std::size_t limit) {
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  std::size_t i = 0;
  while (i < n) {
    // A run of plain bytes.
    const std::size_t j = plain_run_end(p, i, n);
    if (j > i) {
      const std::size_t room = limit > out.size() ? limit - out.size() : 0;
      if (j - i > room) {
        out.append(s + i, room);
        return false;
      }
      out.append(s + i, j - i);
      i = j;
      if (i == n) break;
    }
    // One special unit.
    char buf[6];
    std::size_t len = 0;
    const char* src = buf;
    const unsigned char c = p[i];
    std::size_t consumed = 1;
    if (const char letter = short_escape(c); letter != 0) {
      buf[0] = '\\';
      buf[1] = letter;
      len = 2;
    } else if (c < 0x20) {
      buf[0] = '\\';
      buf[1] = 'u';
      buf[2] = '0';
      buf[3] = '0';
      buf[4] = kHex[c >> 4];
      buf[5] = kHex[c & 15];
      len = 6;
    } else {
      const std::size_t k = utf8_seq(p + i, n - i);
      if (k == 0) {
        src = "\xEF\xBF\xBD";  // U+FFFD for a byte that starts no valid sequence
        len = 3;
      } else {
        src = s + i;
        len = k;
        consumed = k;
      }
    }
    if (out.size() + len > limit) return false;
    out.append(src, len);
    i += consumed;
  }
  return true;
}

// ----- small formatters ---------------------------------------------------

template <class Int>
void put_int(Out& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void put_double(Out& out, double d) {
  if (d != d) {
    out += R"({"$numberDouble":"NaN"})";
    return;
  }
  if (d * 0 != 0) {
    out += d > 0 ? R"({"$numberDouble":"Infinity"})" : R"({"$numberDouble":"-Infinity"})";
    return;
  }
  // Small integral values (ok: 1.0, n: 3.0, ...): to_chars would give the
  // digits (fixed notation is the shorter one below 1e5), then ".0".
  if (d > -100000.0 && d < 100000.0 && d == static_cast<double>(static_cast<std::int32_t>(d)) &&
      !(d == 0 && std::signbit(d))) {
    put_int(out, static_cast<std::int32_t>(d));
    out += ".0";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  const auto n = static_cast<std::size_t>(r.ptr - buf);
  out.append(buf, n);
  // As libbson: "1.0", not "1", so the value reads back as a double.
  if (std::strspn(buf, "0123456789-") >= n) out += ".0";
}

void put_base64(Out& out, const std::uint8_t* p, std::size_t n) {
  static constexpr char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::size_t at = out.size();
  out.resize(at + (n + 2) / 3 * 4);
  char* o = out.data() + at;
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const std::uint32_t v = (std::uint32_t{p[i]} << 16) | (std::uint32_t{p[i + 1]} << 8) | p[i + 2];
    *o++ = k[v >> 18];
    *o++ = k[(v >> 12) & 63];
    *o++ = k[(v >> 6) & 63];
    *o++ = k[v & 63];
  }
  if (i < n) {
    std::uint32_t v = std::uint32_t{p[i]} << 16;
    if (i + 1 < n) v |= std::uint32_t{p[i + 1]} << 8;
    *o++ = k[v >> 18];
    *o++ = k[(v >> 12) & 63];
    *o++ = i + 1 < n ? k[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
}

void put_oid(Out& out, const std::uint8_t* oid) {
  char buf[24];
  for (int i = 0; i < 12; ++i) {
    buf[2 * i] = kHex[oid[i] >> 4];
    buf[2 * i + 1] = kHex[oid[i] & 15];
  }
  out += R"({"$oid":")";
  out.append(buf, 24);
  out += "\"}";
}

void put_2(char* p, unsigned v) {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
}

// {"$date":"YYYY-MM-DDTHH:MM:SS[.mmm]Z"} for years 1970..9999, as libbson;
// {"$date":{"$numberLong":"N"}} otherwise.
void put_date(Out& out, std::int64_t ms) {
  if (ms < 0 || ms > 253402300799999LL) {
    out += R"({"$date":{"$numberLong":")";
    put_int(out, ms);
    out += "\"}}";
    return;
  }
  const std::int64_t secs = ms / 1000;
  const auto milli = static_cast<unsigned>(ms % 1000);
  const std::int64_t days = secs / 86400;
  const auto sod = static_cast<unsigned>(secs % 86400);
  // Days since 1970-01-01 to civil date (H. Hinnant's algorithm).
  const std::int64_t z = days + 719468;
  const std::int64_t era = z / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const auto y = static_cast<unsigned>(static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2));
  char buf[24] = "0000-00-00T00:00:00.000";
  put_2(buf, y / 100);
  put_2(buf + 2, y % 100);
  put_2(buf + 5, m);
  put_2(buf + 8, d);
  put_2(buf + 11, sod / 3600);
  put_2(buf + 14, sod / 60 % 60);
  put_2(buf + 17, sod % 60);
  out += R"({"$date":")";
  if (milli != 0) {
    buf[20] = static_cast<char>('0' + milli / 100);
    put_2(buf + 21, milli % 100);
    out.append(buf, 23);
  } else {
    out.append(buf, 19);
  }
  out += "Z\"}";
}

void put_string(Out& out, const char* s, std::size_t n) {
  out += '"';
  escape_into(out, s, n, static_cast<std::size_t>(-1));
  out += '"';
}

// ----- the walk --------------------------------------------------------------

struct Writer {
  Out& out;
  std::size_t limit;        // absolute position in `out` the content must not pass
  const std::uint8_t* end;  // the end of the root document: bytes before it may be read
  bool cut = false;
  bool corrupt = false;
  bool canonical = false;  // JsonOptions::canonical

  bool fits() const noexcept { return out.size() <= limit; }

  /// The fast path of keys and strings: a short one with nothing to escape
  /// that fits whole is written `"text"` (then `after`, unless '\0') in one
  /// append. Otherwise writes nothing and returns false: the caller takes
  /// the general path, which gives the same output when this one applies.
  /// `s` lies inside the walked document, which may be read up to `end`.
  bool quoted_plain(const char* s, std::size_t n, char after) {
    constexpr std::size_t kMax = 60;
    constexpr std::size_t kWord = 16;  // short texts: copied as a fixed 16 bytes
    const std::size_t total = n + (after != '\0' ? 3 : 2);
    if (n > kMax || out.size() + total > limit) return false;
    const auto* p = reinterpret_cast<const unsigned char*>(s);
    const auto readable = static_cast<std::size_t>(end - p);
    if (plain_run_end(p, 0, n, readable) != n) return false;
    char* o = out.extend(total, kWord + 1);
    o[0] = '"';
    if (n <= kWord && readable >= kWord)
      std::memcpy(o + 1, s, kWord);  // the bytes past n are overwritten or past the end
    else
      std::memcpy(o + 1, s, n);
    o[n + 1] = '"';
    if (after != '\0') o[n + 2] = after;
    return true;
  }

  // Writes the elements of `doc` (framed: bson_framed).
  void members(BsonView doc, bool array, int depth) {
    BsonWalk walk(doc);
    BsonElement e;
    bool first = true;
    while (!cut && walk.next(e)) {
      const std::size_t mark = out.size();  // rollback point: before the comma
      if (!first) out += ',';
      first = false;
      if (!array && !quoted_plain(e.key.data(), e.key.size(), ':')) {
        out += '"';
        if (!escape_into(out, e.key.data(), e.key.size(), limit)) {
          rollback(mark);
          return;
        }
        out += "\":";
      }
      if (!fits()) {
        rollback(mark);
        return;
      }
      value(e, depth, mark);
    }
    if (!cut && walk.corrupt()) corrupt = true;
  }

  void rollback(std::size_t mark) {
    out.resize(mark);
    cut = true;
  }

  // Writes one value; atomic values that overflow the budget are rolled back
  // to `mark` (before the element's comma and key).
  void value(const BsonElement& e, int depth, std::size_t mark) {
    switch (e.type) {
      case bson_type::kUtf8: {
        const std::string_view s = e.as_string();
        if (quoted_plain(s.data(), s.size(), '\0')) return;
        if (out.size() + 2 > limit) return rollback(mark);
        out += '"';
        if (!escape_into(out, s.data(), s.size(), limit - 1)) cut = true;
        out += '"';
        return;
      }
      case bson_type::kDocument:
      case bson_type::kArray: {
        const bool array = e.type == bson_type::kArray;
        if (out.size() + 2 > limit) return rollback(mark);
        const BsonView child = e.as_document();
        if (!bson_framed(child)) {
          corrupt = true;
          return;
        }
        out += array ? '[' : '{';
        if (depth + 1 >= kMaxBsonDepth) {
          cut = true;  // too deep to follow: shown empty, reported as cut
        } else {
          members(child, array, depth + 1);
        }
        out += array ? ']' : '}';
        return;
      }
      default:
        atomic(e, depth);
        if (!fits()) rollback(mark);
        return;
    }
  }

  void atomic(const BsonElement& e, int depth) {
    switch (e.type) {
      case bson_type::kDouble:
        if (canonical && e.as_double() * 0 == 0) {  // finite (put_double types the others)
          out += R"({"$numberDouble":")";
          put_double(out, e.as_double());
          out += "\"}";
          return;
        }
        put_double(out, e.as_double());
        return;
      case bson_type::kInt32:
        if (canonical) {
          out += R"({"$numberInt":")";
          put_int(out, e.as_int32());
          out += "\"}";
          return;
        }
        put_int(out, e.as_int32());
        return;
      case bson_type::kInt64:
        if (canonical) {
          out += R"({"$numberLong":")";
          put_int(out, e.as_int64());
          out += "\"}";
          return;
        }
        put_int(out, e.as_int64());
        return;
      case bson_type::kDateTime:
        if (canonical) {
          out += R"({"$date":{"$numberLong":")";
          put_int(out, e.as_int64());
          out += "\"}}";
          return;
        }
        put_date(out, e.as_int64());
        return;
      case bson_type::kBool:
        out += e.as_bool() ? "true" : "false";
        return;
      case bson_type::kNull:
        out += "null";
        return;
      case bson_type::kUndefined:
        out += R"({"$undefined":true})";
        return;
      case bson_type::kOid:
        put_oid(out, e.value);
        return;
      case bson_type::kBinary: {
        const std::uint8_t sub = e.value[4];
        std::uint32_t len = detail::le32(e.value);
        const std::uint8_t* data = e.value + 5;
        if (sub == 2) {  // as bson_iter_binary: the data after the inner length
          data += 4;
          len -= 4;
        }
        if (out.size() + (std::size_t{len} + 2) / 3 * 4 > limit) {
          out.resize(limit + 1);  // cannot fit: let the caller roll back
          return;
        }
        out += R"({"$binary":{"base64":")";
        put_base64(out, data, len);
        out += R"(","subType":")";
        out += kHex[(sub >> 4) & 15];
        out += kHex[sub & 15];
        out += "\"}}";
        return;
      }
      case bson_type::kRegex: {
        const char* pattern = reinterpret_cast<const char*>(e.value);
        const std::size_t plen = std::strlen(pattern);
        const char* options = pattern + plen + 1;
        out += R"({"$regularExpression":{"pattern":)";
        put_string(out, pattern, plen);
        out += R"(,"options":)";
        // libbson writes the options sorted; so do we.
        char sorted[8];
        std::size_t n = 0;
        for (char o : std::string_view("ilmsux")) {
          if (std::strchr(options, o) != nullptr && n < sizeof sorted) sorted[n++] = o;
        }
        put_string(out, sorted, n);
        out += "}}";
        return;
      }
      case bson_type::kDbPointer: {
        const std::string_view coll = e.as_string();
        out += R"({"$dbPointer":{"$ref":)";
        put_string(out, coll.data(), coll.size());
        out += R"(,"$id":)";
        put_oid(out, e.value + 4 + coll.size() + 1);
        out += "}}";
        return;
      }
      case bson_type::kCode:
      case bson_type::kSymbol: {
        const std::string_view code = e.as_string();
        out += e.type == bson_type::kCode ? R"({"$code":)" : R"({"$symbol":)";
        put_string(out, code.data(), code.size());
        out += '}';
        return;
      }
      case bson_type::kCodeWScope: {
        const std::string_view code = bson_code_of_codewscope(e);
        out += R"({"$code":)";
        put_string(out, code.data(), code.size());
        out += R"(,"$scope":{)";
        const BsonView scope = bson_scope_of_codewscope(e);
        if (depth + 1 < kMaxBsonDepth && bson_framed(scope)) {
          // The scope is written whole (no budget) and judged as one token.
          Writer inner{out, static_cast<std::size_t>(-1), end};
          inner.canonical = canonical;
          inner.members(scope, false, depth + 1);
          if (inner.corrupt) corrupt = true;
        } else if (depth + 1 >= kMaxBsonDepth) {
          cut = true;
        } else {
          corrupt = true;
        }
        out += "}}";
        return;
      }
      case bson_type::kTimestamp: {
        // Stored as increment, then seconds (each little-endian uint32).
        out += R"({"$timestamp":{"t":)";
        put_int(out, detail::le32(e.value + 4));
        out += R"(,"i":)";
        put_int(out, detail::le32(e.value));
        out += "}}";
        return;
      }
      case bson_type::kDecimal128: {
        bson_decimal128_t dec;
        dec.low = detail::le64(e.value);
        dec.high = detail::le64(e.value + 8);
        char buf[BSON_DECIMAL128_STRING];
        bson_decimal128_to_string(&dec, buf);
        out += R"({"$numberDecimal":")";
        out += buf;
        out += "\"}";
        return;
      }
      case bson_type::kMinKey:
        out += R"({"$minKey":1})";
        return;
      case bson_type::kMaxKey:
        out += R"({"$maxKey":1})";
        return;
      default:  // BsonWalk never yields other types
        corrupt = true;
        out += "null";
        return;
    }
  }
};

}  // namespace

JsonResult append_relaxed_json(std::string& str, BsonView doc, const JsonOptions& options) {
  JsonResult r;
  const std::size_t start = str.size();
  if (!bson_framed(doc)) {
    str += "{}";
    r.valid = false;
    return r;
  }
  const std::size_t limit =
      options.maxLength == 0 ? static_cast<std::size_t>(-1) : start + options.maxLength;
  // Room for the likely output up front: the budget, or twice the BSON.
  const std::size_t expect = options.maxLength == 0
                                 ? static_cast<std::size_t>(doc.size) * 2
                                 : std::min<std::size_t>(options.maxLength, doc.size * 2);
  Out out(str, expect);
  Writer w{out, limit, doc.data + doc.size};
  w.canonical = options.canonical;
  if (options.maxLength != 0 && options.maxLength < 2) {
    out += "{}";
    r.truncated = doc.size > 5;
    return r;
  }
  out += '{';
  w.members(doc, false, 0);
  out += '}';
  if (w.corrupt) {
    out.resize(start);
    out += "{}";
    r.valid = false;
    return r;
  }
  r.truncated = w.cut;
  return r;
}

bool json_plain(std::string_view s) noexcept {
  return plain_run_end(reinterpret_cast<const unsigned char*>(s.data()), 0, s.size()) == s.size();
}

void append_json_string(std::string& str, std::string_view s) {
  // Short plain texts (names, addresses): quoted in one append, without
  // setting up the writer's buffer.
  constexpr std::size_t kShort = 62;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  if (s.size() <= kShort && plain_run_end(p, 0, s.size()) == s.size()) {
    char buf[kShort + 2];
    buf[0] = '"';
    std::memcpy(buf + 1, s.data(), s.size());
    buf[s.size() + 1] = '"';
    str.append(buf, s.size() + 2);
    return;
  }
  Out out(str, s.size() + 2);
  put_string(out, s.data(), s.size());
}

}  // namespace varanus::wire
