// BsonWalk accepts what libbson's bson_iter accepts: the same elements
// (type, key, value bytes) in the same order, and the same verdict on where
// a malformed document stops, over documents of every type and tens of
// thousands of damaged copies of them. One deliberate difference: an
// embedded document must be framed (length >= 5, trailing NUL), which
// bson_iter_recurse does not check.
#include "varanus/wire/bson_walk.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../support/bson_samples.hpp"
#include "varanus/wire/bounded.hpp"

using namespace varanus::wire;

using namespace varanus::test_bson;

namespace {
std::string hex(const std::vector<std::uint8_t>& bytes) {
  std::string out;
  for (auto c : bytes) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}
}  // namespace

TEST_CASE("BsonWalk reads every BSON type as bson_iter does") {
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    const auto d = random_doc(rng);
    const std::string want = oracle(d);
    REQUIRE(want.find("corrupt") == std::string::npos);
    REQUIRE(ours(d) == want);
  }
}

TEST_CASE("BsonWalk stops where bson_iter stops on damaged documents") {
  std::mt19937 rng(7);
  int corrupt = 0;
  int total = 0;
  for (int i = 0; i < 20000; ++i) {
    auto d = random_doc(rng);
    const int rounds = 1 + static_cast<int>(rng() % 3);
    for (int r = 0; r < rounds; ++r) mutate(d, rng);
    const std::string want = oracle(d);
    const std::string got = ours(d);
    if (got != want) {
      INFO("document: " << hex(d));
      INFO("libbson:\n" << want);
      INFO("BsonWalk:\n" << got);
      REQUIRE(got == want);
    }
    ++total;
    if (want.find("corrupt") != std::string::npos || want.find("unframed") != std::string::npos)
      ++corrupt;
  }
  // The mutations do reach the checks: a good share of documents is damaged.
  CHECK(corrupt > total / 4);
}

TEST_CASE("BsonWalk on framing errors and edge documents") {
  const std::uint8_t empty[] = {5, 0, 0, 0, 0};
  BsonWalk w({empty, 5});
  BsonElement e;
  CHECK_FALSE(w.next(e));
  CHECK_FALSE(w.corrupt());

  const std::uint8_t badLen[] = {6, 0, 0, 0, 0};
  BsonWalk w2({badLen, 5});
  CHECK_FALSE(w2.next(e));
  CHECK(w2.corrupt());

  const std::uint8_t noNul[] = {5, 0, 0, 0, 1};
  CHECK_FALSE(bson_framed({noNul, 5}));
  CHECK_FALSE(bson_framed({nullptr, 0}));

  // {"a": "xy"} with the string's NUL replaced: libbson refuses it.
  std::vector<std::uint8_t> s = {0, 0, 0, 0, 2, 'a', 0, 3, 0, 0, 0, 'x', 'y', 0, 0};
  set_le32(s, 0, static_cast<std::uint32_t>(s.size()));
  CHECK(ours(s) == oracle(s));
  s[13] = 'z';
  CHECK(ours(s) == oracle(s));
  CHECK(ours(s).find("corrupt") != std::string::npos);

  // find: first match at top level only.
  bson_t b = BSON_INITIALIZER;
  BSON_APPEND_INT32(&b, "x", 1);
  bson_t child;
  BSON_APPEND_DOCUMENT_BEGIN(&b, "d", &child);
  BSON_APPEND_INT32(&child, "y", 2);
  bson_append_document_end(&b, &child);
  BSON_APPEND_INT32(&b, "x", 3);
  BsonElement f;
  REQUIRE(BsonWalk::find(BsonView::of(&b), "x", f));
  CHECK(f.as_int32() == 1);
  CHECK(f.as_number() == 1.0);
  CHECK_FALSE(BsonWalk::find(BsonView::of(&b), "y", f));
  bson_destroy(&b);
}

// validate_bson and BsonWalk::find_path replace bson_iter walks: over
// random and damaged documents they agree with libbson's bson_iter on what
// is valid and on what a dotted path finds. (Not with bson_validate: it
// also checks the UTF-8 of keys, which validate_bson does not ask for, and
// passes some documents bson_iter stops in.) The one deliberate difference (an embedded
// document must be framed) is left out of the comparison.
TEST_CASE("validate_bson agrees with libbson on random and damaged documents") {
  std::mt19937 rng(1901);
  int invalid = 0;
  int compared = 0;
  for (int i = 0; i < 20000; ++i) {
    auto d = random_doc(rng);
    if (i % 4 != 0) {
      const int rounds = 1 + static_cast<int>(rng() % 3);
      for (int r = 0; r < rounds; ++r) mutate(d, rng);
    }
    const std::string trace = oracle(d);
    if (trace.find("unframed\n") != std::string::npos && trace != "unframed\n") continue;
    const bool libbsonValid = trace.find("corrupt") == std::string::npos && trace != "unframed\n";
    const BsonView v{d.data(), static_cast<std::uint32_t>(d.size())};
    CAPTURE(trace);
    REQUIRE(validate_bson(v) == libbsonValid);
    ++compared;
    if (!libbsonValid) ++invalid;
  }
  CHECK(compared > 15000);
  CHECK(invalid > compared / 5);
  CHECK(invalid < compared);
}

namespace {
// {"a": {"a": ... {}}} nested `levels` deep (the top document is level 0).
std::vector<std::uint8_t> nested(int levels) {
  std::vector<std::uint8_t> inner = {5, 0, 0, 0, 0};
  for (int i = 0; i < levels; ++i) {
    std::vector<std::uint8_t> outer = {0, 0, 0, 0, 0x03, 'a', 0};
    outer.insert(outer.end(), inner.begin(), inner.end());
    outer.push_back(0);
    set_le32(outer, 0, static_cast<std::uint32_t>(outer.size()));
    inner.swap(outer);
  }
  return inner;
}
}  // namespace

TEST_CASE("validate_bson follows documents up to kMaxBsonDepth levels") {
  const auto ok = nested(kMaxBsonDepth - 1);
  CHECK(validate_bson({ok.data(), static_cast<std::uint32_t>(ok.size())}));
  const auto deep = nested(kMaxBsonDepth);
  CHECK_FALSE(validate_bson({deep.data(), static_cast<std::uint32_t>(deep.size())}));
}

TEST_CASE("BsonWalk::find_path finds what bson_iter_find_descendant finds") {
  std::mt19937 rng(1902);
  int found = 0;
  int compared = 0;
  for (int i = 0; i < 20000; ++i) {
    auto d = random_doc(rng);
    if (i % 2 != 0) mutate(d, rng);
    const std::string trace = oracle(d);
    if (trace.find("unframed\n") != std::string::npos) continue;
    // Keys are k0..k99: a path of one to three random ones, or one that
    // follows elements libbson sees in the document.
    std::string path;
    const int steps = 1 + static_cast<int>(rng() % 3);
    if (rng() % 2 == 0) {
      for (int s = 0; s < steps; ++s) {
        if (s != 0) path += '.';
        path += "k" + std::to_string(rng() % 100);
      }
    } else {
      bson_t top;
      bson_iter_t at;
      if (!bson_init_static(&top, d.data(), d.size()) || !bson_iter_init(&at, &top)) continue;
      for (int s = 0; s < steps; ++s) {
        const unsigned skip = rng() % 4;
        bool ok = bson_iter_next(&at);
        for (unsigned k = 0; ok && k < skip; ++k) ok = bson_iter_next(&at);
        if (!ok) break;
        if (s != 0) path += '.';
        path += bson_iter_key(&at);
        bson_iter_t child;
        if (!BSON_ITER_HOLDS_DOCUMENT(&at) || !bson_iter_recurse(&at, &child)) break;
        at = child;
      }
      if (path.empty()) continue;
    }
    bson_t b;
    bson_iter_t it;
    bson_iter_t want;
    const bool libbsonFound = bson_init_static(&b, d.data(), d.size()) && bson_iter_init(&it, &b) &&
                              bson_iter_find_descendant(&it, path.c_str(), &want);
    BsonElement got;
    const bool ourFound =
        BsonWalk::find_path({d.data(), static_cast<std::uint32_t>(d.size())}, path, got);
    CAPTURE(path);
    CAPTURE(trace);
    REQUIRE(ourFound == libbsonFound);
    ++compared;
    if (!ourFound) continue;
    ++found;
    CHECK(got.type == static_cast<std::uint8_t>(bson_iter_type(&want)));
    CHECK(got.key == bson_iter_key(&want));
    // The same element of the same bytes: its value follows its key.
    CHECK(got.value ==
          reinterpret_cast<const std::uint8_t*>(bson_iter_key(&want)) + got.key.size() + 1);
  }
  CHECK(compared > 10000);
  CHECK(found > 1000);
}

// The bounded copy walks with BsonWalk and writes the copy by hand; before,
// it walked with bson_iter and built the copy with bson_append_*. That
// version is kept here as the reference: over random and damaged documents
// both make the same bytes and the same verdicts (cut, omitted, invalid).
namespace reference {

constexpr std::int64_t kMargin = 16;

/// Lower bound of the relaxed JSON of an atomic value (not a string, binary,
/// document or array), in characters.
std::int64_t atomic_json(bson_type_t t) noexcept {
  switch (t) {
    case BSON_TYPE_OID:
      return 34;  // {"$oid":"<24 hex>"}
    case BSON_TYPE_DATE_TIME:
    case BSON_TYPE_TIMESTAMP:
    case BSON_TYPE_DECIMAL128:
    case BSON_TYPE_UNDEFINED:
    case BSON_TYPE_REGEX:
    case BSON_TYPE_DBPOINTER:
      return 19;  // {"$undefined":true} is the shortest of these
    case BSON_TYPE_MINKEY:
    case BSON_TYPE_MAXKEY:
    case BSON_TYPE_CODE:
    case BSON_TYPE_SYMBOL:
    case BSON_TYPE_CODEWSCOPE:
      return 12;  // {"$code":""}
    case BSON_TYPE_BOOL:
    case BSON_TYPE_NULL:
      return 4;
    default:
      return 1;  // numbers
  }
}

/// Length of the UTF-8 prefix of s[0..n) that keeps at least `want` bytes and
/// does not end inside a code point.
std::size_t utf8_cut(const char* s, std::size_t n, std::size_t want) noexcept {
  if (want >= n) return n;
  std::size_t k = want;
  while (k < n && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) ++k;
  return k;
}

class ReferenceCopier {
 public:
  explicit ReferenceCopier(const CopyBound& b)
      : plain_(static_cast<std::int64_t>(b.jsonLength)),
        types_(b.typeNames ? static_cast<std::int64_t>(b.jsonLength) : 0) {}

  bool satisfied() const noexcept { return plain_ <= 0 && types_ <= 0; }
  bool cut() const noexcept { return cut_; }
  bool omitted() const noexcept { return omitted_; }
  void omit() noexcept { cut_ = omitted_ = true; }
  bool failed() const noexcept { return failed_; }

  /// Charges an element's comma (not before the first) and key (`"key":`,
  /// none in an array).
  void key(std::size_t keyLength, bool array, bool first) noexcept {
    const std::int64_t cost =
        (first ? 0 : 1) + (array ? 0 : static_cast<std::int64_t>(keyLength) + 3);
    plain_ -= cost;
    types_ -= cost;
  }
  /// Charges an opening bracket. The closing ones are not counted: both
  /// renderers write them past their budget.
  void open() noexcept {
    plain_ -= 1;
    types_ -= 1;
  }

  /// Copies the members of `it` (positioned before the first) into `out`
  /// until satisfied.
  void members(bson_iter_t& it, bson_t* out, bool array, int depth) {
    bool first = true;
    while (bson_iter_next(&it)) {
      if (satisfied()) {
        omit();
        return;
      }
      const char* k = bson_iter_key(&it);
      const auto klen = static_cast<int>(bson_iter_key_len(&it));
      key(static_cast<std::size_t>(klen), array, first);
      first = false;
      const bson_type_t type = bson_iter_type(&it);
      if ((type == BSON_TYPE_DOCUMENT || type == BSON_TYPE_ARRAY) && depth + 1 < kMaxBsonDepth) {
        bson_iter_t child;
        if (!bson_iter_recurse(&it, &child)) {
          failed_ = true;
          return;
        }
        open();
        bson_t sub;
        const bool isArray = type == BSON_TYPE_ARRAY;
        if (isArray) {
          bson_append_array_begin(out, k, klen, &sub);
        } else {
          bson_append_document_begin(out, k, klen, &sub);
        }
        members(child, &sub, isArray, depth + 1);
        if (isArray) {
          bson_append_array_end(out, &sub);
        } else {
          bson_append_document_end(out, &sub);
        }
        if (failed_) return;
        continue;
      }
      if (type == BSON_TYPE_UTF8) {
        std::uint32_t len = 0;
        const char* s = bson_iter_utf8(&it, &len);
        // Relaxed JSON: at least len + 2 characters. Keep what it can show,
        // and a little more, so that the rendering of the copy passes its
        // budget inside this string just as the whole document's does.
        const std::size_t keep =
            plain_ >= static_cast<std::int64_t>(len) + 2
                ? len
                : utf8_cut(s, len,
                           static_cast<std::size_t>(std::max<std::int64_t>(plain_, 0)) + kMargin);
        if (keep < len) cut_ = true;
        bson_append_utf8(out, k, klen, s, static_cast<int>(keep));
        plain_ -= static_cast<std::int64_t>(len) + 2;
        types_ -= 8;  // "string"
        continue;
      }
      if (type == BSON_TYPE_BINARY) {
        bson_subtype_t sub{};
        std::uint32_t len = 0;
        const std::uint8_t* data = nullptr;
        bson_iter_binary(&it, &sub, &len, &data);
        // {"$binary":{"base64":"...","subType":"00"}}: 39 characters and at
        // least one per byte.
        const std::size_t keep = plain_ >= static_cast<std::int64_t>(len) + 39
                                     ? len
                                     : static_cast<std::size_t>(std::clamp<std::int64_t>(
                                           plain_ + kMargin, 0, static_cast<std::int64_t>(len)));
        if (keep < len) cut_ = true;
        bson_append_binary(out, k, klen, sub, data, static_cast<std::uint32_t>(keep));
        plain_ -= static_cast<std::int64_t>(len) + 39;
        types_ -= 9;  // "binData"
        continue;
      }
      // Numbers, dates, ids...: small and kept whole (as are sub-documents
      // past the depth limit and the rare code/regex types).
      if (!bson_append_iter(out, k, klen, &it)) {
        failed_ = true;
        return;
      }
      plain_ -= atomic_json(type);
      types_ -= 5;  // "int", the shortest type name
    }
    if (it.err_off != 0) failed_ = true;
  }

 private:
  std::int64_t plain_;
  std::int64_t types_;
  bool cut_ = false;
  bool omitted_ = false;
  bool failed_ = false;
};

BoundedBytes bounded_copy(BsonView doc, const CopyBound& bound) {
  bson_t in;
  bson_iter_t it;
  if (!doc.init_static(&in) || !bson_iter_init(&it, &in))
    return {BsonBytes{5, 0, 0, 0, 0}, true, true};
  ReferenceCopier c(bound);
  c.open();
  bson_t out;
  bson_init(&out);
  c.members(it, &out, false, 0);
  BoundedBytes r;
  if (c.failed()) {
    r.bytes = BsonBytes{5, 0, 0, 0, 0};
  } else {
    r.bytes.assign(bson_get_data(&out), bson_get_data(&out) + out.len);
  }
  r.cut = c.cut() || c.failed();
  r.omitted = c.omitted() || c.failed();
  bson_destroy(&out);
  return r;
}

// bson_append_iter rewrites some elements: code, code-with-scope and
// dbPointer strings go through C-string calls (cut at a NUL inside), regex
// options are filtered to "ilmsux" and sorted. The new copy keeps such an
// element's bytes as they are. Documents that have one are left out of the
// comparison.
bool rewritten_by_libbson(bson_iter_t& it, int depth) {
  while (bson_iter_next(&it)) {
    std::uint32_t len = 0;
    const char* text = nullptr;
    switch (bson_iter_type(&it)) {
      case BSON_TYPE_CODE:
        text = bson_iter_code(&it, &len);
        break;
      case BSON_TYPE_CODEWSCOPE: {
        std::uint32_t scopeLen = 0;
        const std::uint8_t* scope = nullptr;
        text = bson_iter_codewscope(&it, &len, &scopeLen, &scope);
        break;
      }
      case BSON_TYPE_DBPOINTER: {
        const bson_oid_t* oid = nullptr;
        bson_iter_dbpointer(&it, &len, &text, &oid);
        break;
      }
      case BSON_TYPE_REGEX: {
        const char* options = nullptr;
        bson_iter_regex(&it, &options);
        std::string kept;
        for (const char* c = "ilmsux"; *c != 0; ++c)
          if (std::strchr(options, *c) != nullptr) kept += *c;
        if (kept != options) return true;
        break;
      }
      case BSON_TYPE_DOCUMENT:
      case BSON_TYPE_ARRAY: {
        bson_iter_t child;
        if (depth < 20 && bson_iter_recurse(&it, &child) && rewritten_by_libbson(child, depth + 1))
          return true;
        break;
      }
      default:
        break;
    }
    if (text != nullptr && std::strlen(text) != len) return true;
  }
  return false;
}

bool rewritten_by_libbson(const std::vector<std::uint8_t>& d) {
  bson_iter_t it;
  return bson_iter_init_from_data(&it, d.data(), d.size()) && rewritten_by_libbson(it, 0);
}

}  // namespace reference

TEST_CASE("bounded_copy walks and copies as the bson_iter version did") {
  std::mt19937 rng(1903);
  int compared = 0;
  int cut = 0;
  int invalid = 0;
  for (int i = 0; i < 6000; ++i) {
    auto d = random_doc(rng);
    if (i % 3 != 0) mutate(d, rng);
    if (oracle(d).find("unframed\n") != std::string::npos) continue;
    if (reference::rewritten_by_libbson(d)) continue;
    const BsonView v{d.data(), static_cast<std::uint32_t>(d.size())};
    for (std::size_t length : {4u, 16u, 40u}) {
      for (bool typeNames : {false, true}) {
        const CopyBound bound{length, typeNames};
        if (d.size() <= 4 * length) continue;  // copied whole without a walk
        const BoundedBytes want = reference::bounded_copy(v, bound);
        const BoundedBytes got = bounded_copy(v, bound, BsonBytes(7, 0xAA));
        CAPTURE(length);
        CAPTURE(typeNames);
        INFO("document: " << hex(d));
        INFO("bson_iter version: " << hex(want.bytes));
        INFO("BsonWalk version: " << hex(got.bytes));
        REQUIRE(got.bytes == want.bytes);
        REQUIRE(got.cut == want.cut);
        REQUIRE(got.omitted == want.omitted);
        ++compared;
        if (want.cut) ++cut;
        if (want.bytes.size() == 5 && want.cut) ++invalid;
      }
    }
  }
  CHECK(compared > 10000);
  CHECK(cut > compared / 4);
  CHECK(invalid > 100);
}
