// Bounded copies keep what a bounded JSON rendering shows, and little more:
// rendering the copy gives the very text the whole document gives, for every
// budget up to the bound, while a 1 MB document costs a few kilobytes.
#include "varanus/wire/bounded.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "varanus/wire/builder.hpp"
#include "varanus/wire/json.hpp"
#include "varanus/wire/message.hpp"

using namespace varanus::wire;

namespace {

struct Doc {
  bson_t b = BSON_INITIALIZER;
  Doc() = default;
  Doc(const Doc&) = delete;
  ~Doc() { bson_destroy(&b); }
  BsonView view() const { return BsonView::of(&b); }
};

std::string render(BsonView doc, std::size_t maxLength, bool* truncated = nullptr) {
  std::string out;
  const JsonResult r = append_relaxed_json(out, doc, {maxLength});
  if (truncated) *truncated = r.truncated;
  return out;
}

BsonView view_of(const BsonBytes& b) {
  return {b.data(), static_cast<std::uint32_t>(b.size())};
}

// A random document: nested documents and arrays, strings (ASCII, escapes,
// multi-byte UTF-8, long), binaries, numbers, ids, dates, booleans, nulls.
void fill(bson_t* b, std::mt19937& rng, int depth, bool array) {
  const int n = static_cast<int>(rng() % (depth == 0 ? 12 : 6)) + 1;
  for (int i = 0; i < n; ++i) {
    std::string key = array ? "" : "k";
    key += std::to_string(array ? static_cast<unsigned>(i) : rng() % 1000);
    const int klen = static_cast<int>(key.size());
    switch (rng() % 11) {
      case 0:
      case 1: {
        std::string s;
        const std::size_t len = rng() % 4 == 0 ? 2000 + rng() % 30000 : rng() % 40;
        const char* pieces[] = {"a",  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\"",
                                "\n", "z"};
        while (s.size() < len) s += pieces[rng() % 7];
        bson_append_utf8(b, key.c_str(), klen, s.data(), static_cast<int>(s.size()));
        break;
      }
      case 2:
        if (depth < 4) {
          bson_t sub;
          bson_append_document_begin(b, key.c_str(), klen, &sub);
          fill(&sub, rng, depth + 1, false);
          bson_append_document_end(b, &sub);
        } else {
          bson_append_int32(b, key.c_str(), klen, 7);
        }
        break;
      case 3:
        if (depth < 4) {
          bson_t sub;
          bson_append_array_begin(b, key.c_str(), klen, &sub);
          fill(&sub, rng, depth + 1, true);
          bson_append_array_end(b, &sub);
        } else {
          bson_append_null(b, key.c_str(), klen);
        }
        break;
      case 4: {
        std::vector<std::uint8_t> bin(rng() % 3 == 0 ? 5000 : rng() % 20);
        for (auto& x : bin) x = static_cast<std::uint8_t>(rng());
        bson_append_binary(b, key.c_str(), klen, BSON_SUBTYPE_BINARY, bin.data(),
                           static_cast<std::uint32_t>(bin.size()));
        break;
      }
      case 5:
        bson_append_int64(b, key.c_str(), klen, static_cast<std::int64_t>(rng()) - 1'000'000'000);
        break;
      case 6:
        bson_append_double(b, key.c_str(), klen, static_cast<double>(rng() % 1000) / 7.0);
        break;
      case 7: {
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, "5f1e2d3c4b5a69788796a5b4");
        bson_append_oid(b, key.c_str(), klen, &oid);
        break;
      }
      case 8:
        bson_append_date_time(b, key.c_str(), klen, 1'700'000'000'000LL);
        break;
      case 9:
        bson_append_bool(b, key.c_str(), klen, rng() % 2 == 0);
        break;
      default:
        bson_append_int32(b, key.c_str(), klen, 0);
    }
  }
}

}  // namespace

TEST_CASE("a small document is copied whole and is not cut") {
  Doc d;
  BSON_APPEND_UTF8(&d.b, "find", "orders");
  BSON_APPEND_INT32(&d.b, "limit", 1);
  BSON_APPEND_UTF8(&d.b, "$db", "shop");
  const BoundedBytes c = bounded_copy(d.view(), {1000, false});
  CHECK_FALSE(c.cut);
  CHECK_FALSE(c.omitted);
  CHECK(c.bytes == BsonBytes(d.view().data, d.view().data + d.view().size));
}

TEST_CASE("an unlimited bound copies everything") {
  Doc d;
  const std::string big(100'000, 'x');
  bson_append_utf8(&d.b, "s", -1, big.data(), static_cast<int>(big.size()));
  const BoundedBytes c = bounded_copy(d.view(), {});
  CHECK_FALSE(c.cut);
  CHECK(c.bytes.size() == d.view().size);
}

TEST_CASE("a 1 MB string is cut to what the rendering shows") {
  Doc d;
  BSON_APPEND_INT32(&d.b, "_id", 1);
  const std::string big(1'000'000, 'p');
  bson_append_utf8(&d.b, "payload", -1, big.data(), static_cast<int>(big.size()));
  BSON_APPEND_UTF8(&d.b, "after", "never shown");
  const BoundedBytes c = bounded_copy(d.view(), {2128, false});
  CHECK(c.cut);
  CHECK(c.omitted);  // "after" is left out
  CHECK(c.bytes.size() < 4 * 1024);
  for (std::size_t budget : {10u, 100u, 1000u, 2064u, 2128u}) {
    bool fullCut = false;
    bool copyCut = false;
    CHECK(render(view_of(c.bytes), budget, &copyCut) == render(d.view(), budget, &fullCut));
    CHECK(fullCut);
    CHECK(copyCut);
  }
}

TEST_CASE(
    "rendering a bounded copy gives the whole document's text, for any budget up to the bound") {
  std::mt19937 rng(20261201);
  int cutCopies = 0;
  for (int round = 0; round < 300; ++round) {
    Doc d;
    fill(&d.b, rng, 0, false);
    const std::size_t bound = 1 + rng() % 3000;
    const BoundedBytes c = bounded_copy(d.view(), {bound, false});
    bson_t copy;
    REQUIRE(bson_init_static(&copy, c.bytes.data(), c.bytes.size()));
    if (c.cut) ++cutCopies;
    // Much smaller than the document when cut: bounded by the bound, not the input.
    if (c.cut) CHECK(c.bytes.size() <= 20 * bound + 64 * 1024);
    for (std::size_t budget : {bound / 4 + 1, bound / 2 + 1, bound}) {
      const std::string whole = render(d.view(), budget);
      const std::string kept = render(view_of(c.bytes), budget);
      CHECK_MESSAGE(whole == kept, "round " << round << " bound " << bound << " budget " << budget);
    }
  }
  CHECK(cutCopies > 50);  // the test does exercise cutting
}

TEST_CASE("the worst case for the bound: many tiny array elements") {
  // An array of int64 zeros: ~15 BSON bytes per element for 2 JSON characters.
  Doc d;
  bson_t arr;
  bson_append_array_begin(&d.b, "zeros", -1, &arr);
  char keybuf[16];
  for (std::uint32_t i = 0; i < 200'000; ++i) {
    const char* key = nullptr;
    const auto klen = bson_uint32_to_string(i, &key, keybuf, sizeof keybuf);
    bson_append_int64(&arr, key, static_cast<int>(klen), 0);
  }
  bson_append_array_end(&d.b, &arr);
  const BoundedBytes c = bounded_copy(d.view(), {1000, false});
  CHECK(c.cut);
  CHECK(c.bytes.size() < 16 * 1024);
  CHECK(render(view_of(c.bytes), 1000) == render(d.view(), 1000));
}

TEST_CASE("a merged insert with 1 MB documents is bounded as a whole") {
  Doc body;
  BSON_APPEND_UTF8(&body.b, "insert", "big");
  BSON_APPEND_BOOL(&body.b, "ordered", true);
  BSON_APPEND_UTF8(&body.b, "$db", "bench");
  std::vector<std::unique_ptr<Doc>> docs;
  std::vector<BsonView> views;
  for (int i = 0; i < 3; ++i) {
    auto doc = std::make_unique<Doc>();
    BSON_APPEND_INT32(&doc->b, "_id", i);
    const std::string payload(1'000'000, static_cast<char>('a' + i));
    bson_append_utf8(&doc->b, "payload", -1, payload.data(), static_cast<int>(payload.size()));
    views.push_back(doc->view());
    docs.push_back(std::move(doc));
  }
  const DocumentSequence seq{"documents", views};
  const Frame frame = build_op_msg(7, 0, 0, body.view(), std::span(&seq, 1));
  auto decoded = decode(frame);
  REQUIRE(decoded);
  auto view = command_view(*decoded);
  REQUIRE(view);
  const BsonBytes full = merged_command(*view);
  const BoundedBytes c = bounded_merged_command(*view, {2128, false});
  CHECK(c.cut);
  CHECK(c.bytes.size() < 4 * 1024);
  for (std::size_t budget : {50u, 1000u, 2128u})
    CHECK(render(view_of(c.bytes), budget) == render(view_of(full), budget));
  // Small commands with sequences are merged whole.
  const BoundedBytes whole = bounded_merged_command(*view, {});
  CHECK_FALSE(whole.cut);
  CHECK(whole.bytes == full);
}

TEST_CASE("an invalid document becomes {} and says it was cut") {
  Doc d;
  const std::string text(300, 's');
  bson_append_utf8(&d.b, "a", -1, text.data(), static_cast<int>(text.size()));
  BsonBytes bytes(d.view().data, d.view().data + d.view().size);
  bytes[7] = 0xff;  // the string's length now runs past the document
  const BoundedBytes c =
      bounded_copy(BsonView{bytes.data(), static_cast<std::uint32_t>(bytes.size())}, {4, false});
  CHECK(c.cut);
  CHECK(c.bytes == BsonBytes{5, 0, 0, 0, 0});
}
