// The fast relaxed Extended JSON writer gives the same JSON values as
// libbson's bson_as_relaxed_extended_json, and bounds its output without
// ever producing invalid JSON or a split code point.
#include "varanus/wire/json.hpp"

#include <doctest/doctest.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus::wire;
using nlohmann::json;

namespace {

// A document holding every BSON type (and the awkward values of each).
struct AllTypes {
  bson_t b = BSON_INITIALIZER;
  AllTypes() {
    bson_append_double(&b, "one", -1, 1.0);
    bson_append_double(&b, "pi", -1, 3.141592653589793);
    bson_append_double(&b, "nan", -1, std::numeric_limits<double>::quiet_NaN());
    bson_append_double(&b, "inf", -1, std::numeric_limits<double>::infinity());
    bson_append_double(&b, "ninf", -1, -std::numeric_limits<double>::infinity());
    bson_append_double(&b, "negzero", -1, -0.0);
    bson_append_double(&b, "big", -1, 1e300);
    bson_append_double(&b, "tiny", -1, 5e-324);
    bson_append_double(&b, "neg", -1, -2.5e-7);
    bson_append_double(&b, "int_like", -1, 1e15);
    bson_append_int32(&b, "i32", -1, -2147483647 - 1);
    bson_append_int64(&b, "i64", -1, 9007199254740993LL);
    bson_append_int64(&b, "i64min", -1, std::numeric_limits<std::int64_t>::min());
    const char esc[] = "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f end";
    bson_append_utf8(&b, "escapes", -1, esc, static_cast<int>(sizeof esc - 1));
    bson_append_utf8(&b, "unicode", -1, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", -1);
    bson_append_utf8(&b, "nul", -1, "a\0b", 3);
    bson_append_utf8(&b, "k\"ey\n\xc3\xa9", -1, "", 0);
    bson_t child;
    bson_append_document_begin(&b, "doc", -1, &child);
    bson_append_int32(&child, "x", -1, 1);
    bson_append_utf8(&child, "y", -1, "z", -1);
    bson_append_document_end(&b, &child);
    bson_append_document_begin(&b, "emptydoc", -1, &child);
    bson_append_document_end(&b, &child);
    bson_append_array_begin(&b, "arr", -1, &child);
    bson_append_int32(&child, "0", -1, 1);
    bson_append_utf8(&child, "1", -1, "two", -1);
    bson_append_null(&child, "2", -1);
    bson_append_array_end(&b, &child);
    bson_append_array_begin(&b, "emptyarr", -1, &child);
    bson_append_array_end(&b, &child);
    const std::uint8_t bin[] = {0,   1,    2,    250,  251,  252,  253,  254,
                                255, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70};
    const bson_subtype_t subs[] = {
        BSON_SUBTYPE_BINARY,          BSON_SUBTYPE_FUNCTION, BSON_SUBTYPE_BINARY_DEPRECATED,
        BSON_SUBTYPE_UUID_DEPRECATED, BSON_SUBTYPE_UUID,     BSON_SUBTYPE_MD5,
        BSON_SUBTYPE_ENCRYPTED,       BSON_SUBTYPE_USER};
    int k = 0;
    for (bson_subtype_t s : subs) {
      const std::string key = "bin" + std::to_string(k++);
      bson_append_binary(&b, key.c_str(), -1, s, bin, 16);
    }
    bson_append_binary(&b, "bin_len1", -1, BSON_SUBTYPE_BINARY, bin, 1);
    bson_append_binary(&b, "bin_len2", -1, BSON_SUBTYPE_BINARY, bin, 2);
    bson_append_binary(&b, "bin_empty", -1, BSON_SUBTYPE_BINARY, bin, 0);
    bson_append_undefined(&b, "undef", -1);
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "5f1a2b3c4d5e6f708192a3b4");
    bson_append_oid(&b, "oid", -1, &oid);
    bson_append_bool(&b, "t", -1, true);
    bson_append_bool(&b, "f", -1, false);
    bson_append_date_time(&b, "date_ms", -1, 1234567890123);
    bson_append_date_time(&b, "date_s", -1, 1700000000000);
    bson_append_date_time(&b, "date_epoch", -1, 0);
    bson_append_date_time(&b, "date_leap", -1, 951782400001);  // 2000-02-29
    bson_append_date_time(&b, "date_max", -1, 253402300799999);
    bson_append_date_time(&b, "date_after", -1, 253402300800000);
    bson_append_date_time(&b, "date_neg", -1, -1);
    bson_append_null(&b, "null", -1);
    bson_append_regex(&b, "re", -1, "^a\"\\d+$", "xmi");
    bson_append_regex(&b, "re_noopt", -1, "b", "");
    bson_append_dbpointer(&b, "dbp", -1, "db.coll", &oid);
    bson_append_code(&b, "code", -1, "function() { return \"x\"; }");
    bson_append_symbol(&b, "sym", -1, "symbol\n", -1);
    bson_t scope = BSON_INITIALIZER;
    bson_append_int32(&scope, "n", -1, 5);
    bson_append_document_begin(&scope, "inner", -1, &child);
    bson_append_utf8(&child, "s", -1, "v", -1);
    bson_append_document_end(&scope, &child);
    bson_append_code_with_scope(&b, "cws", -1, "n + 1", &scope);
    bson_destroy(&scope);
    bson_append_timestamp(&b, "ts", -1, 4294967295u, 7);
    bson_decimal128_t dec;
    for (const char* d :
         {"1.5E+3", "-0.0001", "NaN", "Infinity", "1234567890123456789012345678901234"}) {
      bson_decimal128_from_string(d, &dec);
      const std::string key = std::string("dec_") + d;
      bson_append_decimal128(&b, key.c_str(), -1, &dec);
    }
    bson_append_minkey(&b, "min", -1);
    bson_append_maxkey(&b, "max", -1);
  }
  ~AllTypes() { bson_destroy(&b); }
  BsonView view() const { return BsonView::of(&b); }
};

json libbson_json(BsonView v) {
  return json::parse(v.to_relaxed_json());
}

std::string ours(BsonView v, std::size_t max = 0, JsonResult* res = nullptr) {
  std::string out;
  JsonResult r = append_relaxed_json(out, v, JsonOptions{max});
  if (res) *res = r;
  return out;
}

}  // namespace

TEST_CASE("relaxed JSON equals libbson's for every BSON type") {
  AllTypes all;
  const std::string mine = ours(all.view());
  INFO(mine);
  REQUIRE(json::accept(mine));
  json a = json::parse(mine);
  json b = libbson_json(all.view());
  // One deliberate difference: libbson 1.23 writes year 10000 as the ISO
  // string "10000-01-01T00:00:00Z"; the Extended JSON spec allows ISO only
  // for years 1970-9999 and wants {"$numberLong": ...} beyond, as we write.
  CHECK(b["date_after"] == json::parse(R"({"$date":"10000-01-01T00:00:00Z"})"));
  CHECK(a["date_after"] == json::parse(R"({"$date":{"$numberLong":"253402300800000"}})"));
  a.erase("date_after");
  b.erase("date_after");
  CHECK(a == b);
  // Compare member by member too, so a failure names the element.
  for (auto it = b.begin(); it != b.end(); ++it) {
    CAPTURE(it.key());
    CHECK(a.at(it.key()) == it.value());
  }
  // Compact, and libbson's distinctive spellings.
  CHECK(mine.find(R"("one":1.0,)") != std::string::npos);
  CHECK(mine.find(R"("negzero":-0.0)") != std::string::npos);
  CHECK(mine.find(R"({"$numberDouble":"NaN"})") != std::string::npos);
  CHECK(mine.find(R"("date_ms":{"$date":"2009-02-13T23:31:30.123Z"})") != std::string::npos);
  CHECK(mine.find(R"("date_s":{"$date":"2023-11-14T22:13:20Z"})") != std::string::npos);
  CHECK(mine.find(R"("date_neg":{"$date":{"$numberLong":"-1"}})") != std::string::npos);
  CHECK(mine.find(R"("nul":"a\u0000b")") != std::string::npos);
  CHECK(mine.find(R"("options":"imx")") != std::string::npos);
}

TEST_CASE("relaxed JSON of recorded messages equals libbson's") {
  for (const char* f : {"handshake1.bin", "handshake2.bin", "handshake6.bin", "import.bin",
                        "dollar_dot.bin", "multi_section_update.bin"}) {
    CAPTURE(f);
    const auto bytes = test::read_file(test::testdata(std::string("wire/") + f));
    auto m = decode(bytes);
    REQUIRE(m.ok());
    std::vector<BsonView> docs;
    if (auto* q = std::get_if<OpQuery>(&m->body)) docs.push_back(q->query);
    if (auto* r = std::get_if<OpReply>(&m->body)) docs = r->documents;
    if (auto* s = std::get_if<OpMsg>(&m->body)) {
      docs.push_back(s->body);
      for (auto& seq : s->sequences)
        docs.insert(docs.end(), seq.documents.begin(), seq.documents.end());
    }
    REQUIRE_FALSE(docs.empty());
    for (BsonView d : docs) CHECK(json::parse(ours(d)) == libbson_json(d));
  }
}

TEST_CASE("bounded JSON stays valid at every budget") {
  AllTypes all;
  JsonResult full_r;
  const std::string full = ours(all.view(), 0, &full_r);
  CHECK_FALSE(full_r.truncated);
  CHECK(full_r.valid);
  for (std::size_t max = 1; max <= full.size() + 2; ++max) {
    CAPTURE(max);
    JsonResult r;
    const std::string s = ours(all.view(), max, &r);
    // nlohmann rejects invalid UTF-8, so this also proves no code point was split.
    REQUIRE_MESSAGE(json::accept(s), s);
    // The final '}' is a closer: a budget one short of the full text still fits it.
    CHECK(r.truncated == (max + 1 < full.size()));
    if (max + 1 >= full.size()) CHECK(s == full);
    // The closers may pass the budget by the nesting depth (here at most 3).
    CHECK(s.size() <= std::max<std::size_t>(max, 2) + 3);
    // A prefix of the full text, apart from the closers.
    std::size_t common = 0;
    while (common < s.size() && s[common] == full[common]) ++common;
    CHECK(common + 4 >= s.size());
  }
}

TEST_CASE("bounded strings are cut between code points") {
  bson_t b = BSON_INITIALIZER;
  std::string s;
  for (int i = 0; i < 50; ++i) s += "\xe2\x82\xac\xf0\x9f\x98\x80\"x";  // 3-, 4-byte, escape, ASCII
  bson_append_utf8(&b, "s", -1, s.c_str(), static_cast<int>(s.size()));
  for (std::size_t max = 2; max < 200; ++max) {
    JsonResult r;
    const std::string out = ours(BsonView::of(&b), max, &r);
    REQUIRE_MESSAGE(json::accept(out), out);
    CHECK(r.truncated);
    CHECK(out.size() <= max + 1);
  }
  bson_destroy(&b);
}

TEST_CASE("invalid UTF-8 in strings becomes U+FFFD") {
  std::string out;
  append_json_string(out, std::string_view("a\xff\xc3(b\xed\xa0\x80", 8));
  CHECK(json::accept(out));
  CHECK(json::parse(out).get<std::string>() ==
        "a\xef\xbf\xbd\xef\xbf\xbd(b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  out.clear();
  append_json_string(out, "tab\there \"q\"");
  CHECK(out == R"("tab\there \"q\"")");
}

TEST_CASE("unwalkable BSON gives {} and valid=false") {
  std::string out = "x";
  const std::uint8_t bad[] = {12, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 1};  // no terminator
  JsonResult r = append_relaxed_json(out, BsonView{bad, sizeof bad});
  CHECK_FALSE(r.valid);
  CHECK(out == "x{}");
  const std::uint8_t bad2[] = {12, 0, 0, 0, 0x55, 'a', 0, 1, 0, 0, 0, 0};  // unknown type 0x55
  out.clear();
  r = append_relaxed_json(out, BsonView{bad2, sizeof bad2});
  CHECK_FALSE(r.valid);
  CHECK(out == "{}");
  out.clear();
  r = append_relaxed_json(out, BsonView{});
  CHECK_FALSE(r.valid);
  CHECK(out == "{}");
}

TEST_CASE("deep nesting is bounded, not recursed without end") {
  bson_t* docs[260];
  for (auto& d : docs) d = bson_new();
  for (int i = 258; i >= 0; --i) bson_append_document(docs[i], "a", -1, docs[i + 1]);
  std::string out;
  JsonResult r = append_relaxed_json(out, BsonView::of(docs[0]));
  CHECK(r.valid);
  CHECK(r.truncated);
  CHECK(json::accept(out));
  for (auto& d : docs) bson_destroy(d);
}

TEST_CASE("doubles read as the shortest text that round-trips, integral ones with .0") {
  // The writer's fast path for small integral values must give the very text
  // of its general path (std::to_chars, then ".0" when only digits).
  auto text = [](double d) {
    bson_t b = BSON_INITIALIZER;
    bson_append_double(&b, "d", -1, d);
    std::string out;
    append_relaxed_json(out, BsonView::of(&b));
    bson_destroy(&b);
    return out;
  };
  auto general = [](double d) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, d);
    std::string s(buf, r.ptr);
    if (s.find_first_not_of("0123456789-") == std::string::npos) s += ".0";
    return "{\"d\":" + s + "}";
  };
  for (double d : {0.0, -0.0, 1.0, -1.0, 2.0, 10.0, 99999.0, -99999.0, 100000.0, -100000.0, 1e6,
                   123456.0, 0.5, -2.5, 1e15, 1e16, 4294967296.0, 2147483648.0, -2147483649.0})
    CHECK_MESSAGE(text(d) == general(d), d);
  for (int i = -100500; i <= 100500; i += 7) CHECK(text(i) == general(i));
  CHECK(text(1.0) == R"({"d":1.0})");
  CHECK(text(-0.0) == R"({"d":-0.0})");
  CHECK(text(1e6) == R"({"d":1e+06})");
}

TEST_CASE("short keys and strings at the very end of a document are read inside it") {
  // The fast path reads texts as whole words; at a document's end it must
  // not read past it (ASan checks this) and still give the same text.
  for (std::size_t n = 0; n <= 20; ++n) {
    const std::string key(n == 0 ? 1 : n, 'k');
    const std::string val(n, 'v');
    bson_t b = BSON_INITIALIZER;
    bson_append_utf8(&b, key.c_str(), -1, val.c_str(), -1);
    // An exact-size heap copy, so any read past the end is out of bounds.
    std::vector<std::uint8_t> bytes(bson_get_data(&b), bson_get_data(&b) + b.len);
    bson_destroy(&b);
    std::string out;
    const JsonResult r =
        append_relaxed_json(out, BsonView{bytes.data(), static_cast<std::uint32_t>(bytes.size())});
    CHECK(r.valid);
    CHECK(out == "{\"" + key + "\":\"" + val + "\"}");
  }
}

namespace {

// Equal as Extended JSON values: {"$numberDouble": s} compared as the doubles
// the strings read as (libbson spells them with 17+ digits, we shortest).
bool same_value(const json& a, const json& b) {
  if (a.is_object() && b.is_object() && a.size() == 1 && b.size() == 1 &&
      a.contains("$numberDouble") && b.contains("$numberDouble")) {
    const std::string x = a["$numberDouble"], y = b["$numberDouble"];
    if (x == y) return true;
    const double dx = std::strtod(x.c_str(), nullptr), dy = std::strtod(y.c_str(), nullptr);
    return dx == dy && std::signbit(dx) == std::signbit(dy);
  }
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it)
      if (!b.contains(it.key()) || !same_value(it.value(), b[it.key()])) return false;
    return true;
  }
  if (a.is_array()) {
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!same_value(a[i], b[i])) return false;
    return true;
  }
  return a == b;
}

}  // namespace

TEST_CASE("canonical JSON types every number and date as libbson's canonical form does") {
  AllTypes all;
  std::string mine;
  JsonOptions o;
  o.canonical = true;
  REQUIRE(append_relaxed_json(mine, all.view(), o).valid);
  INFO(mine);
  json a = json::parse(mine);
  bson_t doc;
  REQUIRE(all.view().init_static(&doc));
  char* s = bson_as_canonical_extended_json(&doc, nullptr);
  json b = json::parse(s);
  bson_free(s);
  CHECK(a.size() == b.size());
  for (auto it = b.begin(); it != b.end(); ++it) {
    CAPTURE(it.key());
    CHECK(same_value(a.at(it.key()), it.value()));
  }
  CHECK(a["i64"] == json{{"$numberLong", "9007199254740993"}});
  CHECK(a["i32"] == json{{"$numberInt", "-2147483648"}});
  CHECK(a["one"] == json{{"$numberDouble", "1.0"}});
  CHECK(a["date_ms"] == json{{"$date", {{"$numberLong", "1234567890123"}}}});
  // Bounded like the relaxed form: still valid JSON at every budget.
  for (std::size_t max = 1; max < mine.size(); max += 7) {
    std::string cut;
    o.maxLength = max;
    append_relaxed_json(cut, all.view(), o);
    CHECK_MESSAGE(json::accept(cut), cut);
  }
}
