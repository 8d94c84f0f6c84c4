// Sparse framing: large OP_MSG frames reduced as they stream in. Each test
// checks the reduced frame against the whole one: it decodes (as valid
// BSON), keeps the fields the tracker reads after a large batch, and gives
// the same bounded copies (what events keep), in any chunking of the bytes.
#include "varanus/wire/sparse.hpp"

#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <string>

#include "support.hpp"
#include "varanus/wire/bounded.hpp"
#include "varanus/wire/bson_walk.hpp"
#include "varanus/wire/builder.hpp"
#include "varanus/wire/command.hpp"
#include "varanus/wire/frame.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;

namespace {

// BsonWalk with its current element kept.
class Walker {
 public:
  explicit Walker(BsonView d) : w_(d) {}
  bool next() { return w_.next(e_); }
  const BsonElement& element() const { return e_; }

 private:
  BsonWalk w_;
  BsonElement e_;
};

struct Owned {
  bson_t* b = bson_new();
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { bson_destroy(b); }
  BsonView view() const { return BsonView::of(b); }
};

// {cursor: {firstBatch: [n documents of ~docBytes], id, ns}, ok: 1}
void find_reply(Owned& o, int n, std::size_t docBytes, std::int64_t id) {
  bson_t cursor, batch;
  BSON_APPEND_DOCUMENT_BEGIN(o.b, "cursor", &cursor);
  BSON_APPEND_ARRAY_BEGIN(&cursor, "firstBatch", &batch);
  const std::string pad(docBytes, 'x');
  for (int i = 0; i < n; ++i) {
    bson_t d;
    const std::string key = std::to_string(i);
    BSON_APPEND_DOCUMENT_BEGIN(&batch, key.c_str(), &d);
    BSON_APPEND_INT32(&d, "_id", i);
    BSON_APPEND_UTF8(&d, "pad", pad.c_str());
    bson_append_document_end(&batch, &d);
  }
  bson_append_array_end(&cursor, &batch);
  BSON_APPEND_INT64(&cursor, "id", id);
  BSON_APPEND_UTF8(&cursor, "ns", "bench.read10k");
  bson_append_document_end(o.b, &cursor);
  BSON_APPEND_DOUBLE(o.b, "ok", 1.0);
}

SparseMsg reduce(const Bytes& frame, std::size_t budget, std::size_t chunk) {
  SparseMsg s(budget);
  for (std::size_t at = 0; at < frame.size(); at += chunk)
    s.feed(std::span(frame).subspan(at, std::min(chunk, frame.size() - at)));
  return s;
}

OpMsg decoded(std::span<const std::uint8_t> frame) {
  DecodeOptions o;
  o.verifyChecksum = false;
  o.validateBson = true;
  auto m = decode(frame, o);
  REQUIRE_MESSAGE(bool(m), (m ? std::string() : m.error().message()));
  return std::get<OpMsg>(m->body);
}

std::int64_t cursor_id(BsonView body) {
  for (Walker w(body); w.next();)
    if (w.element().key == "cursor")
      for (Walker c(w.element().as_document()); c.next();)
        if (c.element().key == "id") return c.element().as_int64();
  return 0;
}

void same_bounded(BsonView full, BsonView reduced, std::size_t jsonLength) {
  CopyBound bound;
  bound.jsonLength = jsonLength;
  const BoundedBytes a = bounded_copy(full, bound);
  const BoundedBytes b = bounded_copy(reduced, bound);
  CHECK(a.bytes == b.bytes);
  CHECK(a.cut == b.cut);
  CHECK(a.omitted == b.omitted);
}

}  // namespace

TEST_CASE("a large find reply keeps its first documents and the id, ns and ok after them") {
  Owned body;
  find_reply(body, 1000, 1000, 424242);
  const Bytes frame = build_op_msg(7, 3, 0, body.view());
  REQUIRE(frame.size() > 1'000'000);
  const SparseMsg whole = reduce(frame, 64 * 1024, frame.size());
  REQUIRE(whole.done());
  CHECK(whole.reduced());
  CHECK(whole.frame().size() < 64 * 1024 + 4096);
  const OpMsg m = decoded(whole.frame());
  CHECK(cursor_id(m.body) == 424242);
  CHECK(m.body.to_relaxed_json().find("\"ns\" : \"bench.read10k\"") != std::string::npos);
  CHECK(m.body.to_relaxed_json().find("\"ok\" : 1.0") != std::string::npos);
  // The batch keeps its first documents, keys 0, 1, 2, ... in order.
  std::size_t kept = 0;
  for (Walker w(m.body); w.next();)
    if (w.element().key == "cursor")
      for (Walker c(w.element().as_document()); c.next();)
        if (c.element().key == "firstBatch")
          for (Walker b(c.element().as_document()); b.next(); ++kept)
            CHECK(b.element().key == std::to_string(kept));
  CHECK(kept >= 60);
  CHECK(kept < 70);
  same_bounded(decoded(frame).body, m.body, 1000);

  // Any chunking gives the same bytes.
  for (std::size_t chunk : {1, 2, 3, 7, 19, 4096, 65536, 100'000}) {
    CAPTURE(chunk);
    const SparseMsg s = reduce(frame, 64 * 1024, chunk);
    REQUIRE(s.done());
    CHECK(Bytes(s.frame().begin(), s.frame().end()) ==
          Bytes(whole.frame().begin(), whole.frame().end()));
  }
}

TEST_CASE("an insert's large sequence document is cut, its command fields kept") {
  Owned body;
  BSON_APPEND_UTF8(body.b, "insert", "big");
  BSON_APPEND_BOOL(body.b, "ordered", true);
  BSON_APPEND_UTF8(body.b, "$db", "bench");
  Owned doc;
  BSON_APPEND_INT32(doc.b, "_id", 1);
  const Bytes blob(3'000'000, 0x5A);
  BSON_APPEND_BINARY(doc.b, "blob", BSON_SUBTYPE_BINARY, blob.data(),
                     static_cast<std::uint32_t>(blob.size()));
  BSON_APPEND_UTF8(doc.b, "after", "kept: small, after the budget");
  DocumentSequence seq{"documents", {doc.view(), doc.view()}};
  const Bytes frame = build_op_msg(9, 0, 0, body.view(), std::span(&seq, 1), true);
  for (std::size_t chunk : {13, 65536, 300'000}) {
    CAPTURE(chunk);
    const SparseMsg s = reduce(frame, 64 * 1024, chunk);
    REQUIRE(s.done());
    CHECK(s.frame().size() < 64 * 1024 + 4096);
    const OpMsg full = decoded(frame);
    const OpMsg m = decoded(s.frame());
    CHECK(m.checksum == full.checksum);  // kept as it was
    CHECK(m.body.to_relaxed_json() == full.body.to_relaxed_json());
    REQUIRE(m.sequences.size() == 1);
    CHECK(m.sequences[0].identifier == "documents");
    REQUIRE(m.sequences[0].documents.size() == 1);  // the second one is left out
    const std::string j = m.sequences[0].documents[0].to_relaxed_json();
    CHECK(j.find("\"after\" : \"kept: small, after the budget\"") != std::string::npos);
    CopyBound bound;
    bound.jsonLength = 1000;
    CommandView fv;
    fv.body = full.body;
    fv.sequences = &full.sequences;
    CommandView rv;
    rv.body = m.body;
    rv.sequences = &m.sequences;
    const BoundedBytes a = bounded_merged_command(fv, bound);
    const BoundedBytes b = bounded_merged_command(rv, bound);
    CHECK(a.bytes == b.bytes);
    CHECK(a.cut == b.cut);
    CHECK(a.omitted == b.omitted);
  }
}

TEST_CASE("a string cut at the budget ends on a whole UTF-8 character") {
  std::string big;
  while (big.size() < 400'000) big += "é€𝄞a";  // 2-, 3-, 4- and 1-byte characters
  for (std::size_t budget : {4096, 4097, 4098, 4099, 4100}) {
    CAPTURE(budget);
    Owned body;
    BSON_APPEND_UTF8(body.b, "note", big.c_str());
    BSON_APPEND_INT32(body.b, "ok", 1);
    const Bytes frame = build_op_msg(1, 0, 0, body.view());
    const SparseMsg s = reduce(frame, budget, 777);
    REQUIRE(s.done());
    const OpMsg m = decoded(s.frame());  // validateBson: UTF-8 checked
    bson_t b;
    REQUIRE(m.body.init_static(&b));
    CHECK(bson_validate(&b, BSON_VALIDATE_UTF8, nullptr));
    Walker w(m.body);
    REQUIRE(w.next());
    const std::string_view cut = w.element().as_string();
    CHECK(cut.size() >= 1024);
    CHECK(cut.size() < 8192);
    CHECK(big.compare(0, cut.size(), cut) == 0);
    REQUIRE(w.next());
    CHECK(w.element().key == "ok");
  }
}

TEST_CASE("after the budget: large scalars are left out, small fields kept, kind-2 dropped") {
  Owned body;
  const std::string pad(200'000, 'p');
  BSON_APPEND_UTF8(body.b, "first", pad.c_str());   // crosses: cut
  BSON_APPEND_UTF8(body.b, "second", pad.c_str());  // after: left out
  BSON_APPEND_INT32(body.b, "ok", 1);
  Bytes frame = build_op_msg(1, 0, 0, body.view());
  // Append a kind-2 section by hand (size 4 + payload).
  const Bytes payload(20'000, 1);
  frame.push_back(2);
  const std::uint32_t size = static_cast<std::uint32_t>(4 + payload.size());
  for (int i = 0; i < 4; ++i) frame.push_back(static_cast<std::uint8_t>(size >> (8 * i)));
  frame.insert(frame.end(), payload.begin(), payload.end());
  const std::uint32_t len = static_cast<std::uint32_t>(frame.size());
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<std::uint8_t>(len >> (8 * i));
  const SparseMsg s = reduce(frame, 8192, 5000);
  REQUIRE(s.done());
  const OpMsg m = decoded(s.frame());
  CHECK(m.sectionCount == 1);
  std::vector<std::string> keys;
  for (Walker w(m.body); w.next();) keys.emplace_back(w.element().key);
  CHECK(keys == std::vector<std::string>{"first", "ok"});
}

TEST_CASE("random documents: the reduced frame decodes and bounds to the same copies") {
  std::mt19937 rng(20261202);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  std::function<void(void*, int)> fill = [&](void* raw, int depth) {
    auto* d = static_cast<bson_t*>(raw);
    const int n = 1 + pick(depth == 0 ? 40 : 12);
    for (int i = 0; i < n; ++i) {
      std::string key;
      if (pick(5) != 0) key = std::to_string(pick(1000)).insert(0, 1, 'k');
      switch (pick(depth < 3 ? 12 : 10)) {
        case 0:
          BSON_APPEND_INT32(d, key.c_str(), pick(100));
          break;
        case 1:
          BSON_APPEND_DOUBLE(d, key.c_str(), 0.5 * pick(100));
          break;
        case 2: {
          // A named string: BSON_APPEND_UTF8 evaluates its value twice.
          const auto length = static_cast<std::size_t>(pick(3000));
          const std::string text(length, static_cast<char>('a' + pick(26)));
          BSON_APPEND_UTF8(d, key.c_str(), text.c_str());
          break;
        }
        case 3: {
          const Bytes bin(static_cast<std::size_t>(pick(4000)), 7);
          BSON_APPEND_BINARY(d, key.c_str(), BSON_SUBTYPE_BINARY, bin.data(),
                             static_cast<std::uint32_t>(bin.size()));
          break;
        }
        case 4:
          BSON_APPEND_NULL(d, key.c_str());
          break;
        case 5:
          BSON_APPEND_BOOL(d, key.c_str(), pick(2) == 1);
          break;
        case 6:
          BSON_APPEND_REGEX(d, key.c_str(), "^ab+c", "i");
          break;
        case 7:
          BSON_APPEND_INT64(d, key.c_str(), pick(1 << 20));
          break;
        case 8:
          BSON_APPEND_CODE(d, key.c_str(), "function () { return 1; }");
          break;
        case 9: {
          bson_oid_t oid;
          bson_oid_init_from_string(&oid, "5f0c9a8b7c6d5e4f3a2b1c0d");
          BSON_APPEND_OID(d, key.c_str(), &oid);
          break;
        }
        case 10: {
          bson_t sub;
          BSON_APPEND_DOCUMENT_BEGIN(d, key.c_str(), &sub);
          fill(&sub, depth + 1);
          bson_append_document_end(d, &sub);
          break;
        }
        default: {
          bson_t arr;
          BSON_APPEND_ARRAY_BEGIN(d, key.c_str(), &arr);
          const int m = pick(30);
          for (int j = 0; j < m; ++j) {
            bson_t sub;
            const std::string ak = std::to_string(j);
            BSON_APPEND_DOCUMENT_BEGIN(&arr, ak.c_str(), &sub);
            fill(&sub, depth + 1);
            bson_append_document_end(&arr, &sub);
          }
          bson_append_array_end(d, &arr);
        }
      }
    }
  };
  int reducedFrames = 0;
  for (int round = 0; round < 300; ++round) {
    CAPTURE(round);
    Owned body;
    fill(body.b, 0);
    const std::size_t budget = 512u << pick(5);  // 512 .. 8 KiB
    const Bytes frame = build_op_msg(round, 0, pick(2) ? kMoreToCome : 0, body.view());
    if (frame.size() / 4 <= budget) continue;
    const std::size_t chunk = 1 + static_cast<std::size_t>(pick(3000));
    const SparseMsg s = reduce(frame, budget, chunk);
    REQUIRE_MESSAGE(s.done(), s.error());
    CHECK(s.frame().size() <= frame.size());
    ++reducedFrames;
    const OpMsg m = decoded(s.frame());
    same_bounded(decoded(frame).body, m.body, budget / 32);
  }
  CHECK(reducedFrames > 100);
}

TEST_CASE("broken or unsuitable frames fail with the reason") {
  Owned body;
  find_reply(body, 50, 1000, 1);
  const Bytes good = build_op_msg(1, 0, 0, body.view());

  SUBCASE("not an OP_MSG") {
    Bytes f = good;
    f[12] = 1;  // OP_REPLY
    const SparseMsg s = reduce(f, 1024, 100);
    CHECK(s.failed());
    CHECK(s.error().find("not an OP_MSG") != std::string::npos);
  }
  SUBCASE("an element overruns its document") {
    Bytes f = good;
    // The body's first element is "cursor" (a document) at offset 21 + 4:
    // claim a length past the body's end.
    const std::size_t at = 21 + 4 + 1 + 7;  // type, "cursor\0"
    f[at + 3] = 0x7F;
    const SparseMsg s = reduce(f, 1024, 100);
    CHECK(s.failed());
    CHECK(s.error().find("overruns") != std::string::npos);
  }
  SUBCASE("too many small fields after the budget") {
    Owned wide;
    const std::string pad(100'000, 'z');
    BSON_APPEND_UTF8(wide.b, "big", pad.c_str());
    for (int i = 0; i < 5000; ++i) {
      const std::string key = std::to_string(i).insert(0, 1, 'f');
      BSON_APPEND_INT32(wide.b, key.c_str(), i);
    }
    const Bytes f = build_op_msg(1, 0, 0, wide.view());
    SparseMsg s(1024, 16 * 1024, 32 * 1024);
    s.feed(f);
    CHECK(s.failed());
    CHECK(s.error().find("more than 32768 bytes kept") != std::string::npos);
  }
}

TEST_CASE("FrameReader: a large OP_MSG goes sparse, the frames around it stay whole") {
  Owned big;
  find_reply(big, 600, 1000, 99);
  const Bytes large = build_op_msg(2, 1, 0, big.view());
  test::Doc small(R"({"ping": 1, "$db": "admin"})");
  const Bytes before = build_op_msg(1, 0, 0, small);
  const Bytes after = build_op_msg(3, 0, 0, small);
  const Bytes stream = test::cat({before, large, after});
  for (std::size_t chunk : {5, 1000, 65536, 262144}) {
    CAPTURE(chunk);
    FrameReader r(kDefaultMaxMessageSize, 64 * 1024);
    std::vector<Bytes> frames;
    std::vector<bool> reduced;
    std::size_t most = 0;
    for (std::size_t at = 0; at < stream.size(); at += chunk) {
      r.feed(std::span(stream).subspan(at, std::min(chunk, stream.size() - at)));
      for (;;) {
        auto n = r.next();
        REQUIRE(n.status != FrameStatus::error);
        if (n.status == FrameStatus::need_more) break;
        frames.emplace_back(n.frame.begin(), n.frame.end());
        reduced.push_back(n.reduced);
      }
      most = std::max(most, r.buffered());
    }
    REQUIRE(frames.size() == 3);
    CHECK(frames[0] == before);
    CHECK(frames[2] == after);
    CHECK(reduced == std::vector<bool>{false, true, false});
    CHECK(frames[1].size() < 64 * 1024 + 4096);
    CHECK(cursor_id(decoded(frames[1]).body) == 99);
    CHECK(r.consumed() == stream.size());
    CHECK(r.sparse_frames() == 1);
    CHECK(most < 64 * 1024 + 4096 + chunk);  // never the whole 600 KB
  }
}

TEST_CASE("FrameReader: without a budget, or for other opcodes, frames are buffered whole") {
  Owned big;
  find_reply(big, 600, 1000, 99);
  const Bytes large = build_op_msg(2, 1, 0, big.view());
  auto compressed = build_op_compressed(large, Compressor::zlib);
  REQUIRE(compressed.ok());
  const Bytes* zlibbed = &*compressed;
  for (const Bytes* f : {&large, zlibbed}) {
    for (std::size_t budget : {std::size_t{0}, std::size_t{64 * 1024}}) {
      if (f == &large && budget != 0) continue;
      FrameReader r(kDefaultMaxMessageSize, budget);
      Bytes got;
      for (std::size_t at = 0; at < f->size(); at += 4096) {
        r.feed(std::span(*f).subspan(at, std::min<std::size_t>(4096, f->size() - at)));
        auto n = r.next();
        if (n.status == FrameStatus::frame) {
          got.assign(n.frame.begin(), n.frame.end());
          CHECK_FALSE(n.reduced);
        }
      }
      CHECK(got == *f);
      CHECK(r.sparse_frames() == 0);
    }
  }
}

TEST_CASE("FrameReader: a broken sparse frame fails the stream with the reason") {
  Owned big;
  find_reply(big, 600, 1000, 99);
  Bytes large = build_op_msg(2, 1, 0, big.view());
  large[20] = 9;  // section kind 9 (after the header and flagBits)
  FrameReader r(kDefaultMaxMessageSize, 64 * 1024);
  r.feed(std::span(large).first(100'000));
  auto n = r.next();
  REQUIRE(n.status == FrameStatus::error);
  CAPTURE(n.error->message());
  CHECK(n.error->message().find("section kind 9") != std::string::npos);
  r.feed(std::span(large).subspan(100'000));
  CHECK(r.next().status == FrameStatus::error);  // sticky
}

namespace {
// An insert of `n` documents of ~docBytes each in a kind-1 sequence after
// the body: how drivers send bulk writes.
Bytes large_insert(int n, std::size_t docBytes, bool checksum = false) {
  Owned body;
  BSON_APPEND_UTF8(body.b, "insert", "big");
  BSON_APPEND_UTF8(body.b, "$db", "bench");
  std::vector<Owned> docs(static_cast<std::size_t>(n));
  std::vector<BsonView> views;
  const std::string pad(docBytes, 'q');
  for (int i = 0; i < n; ++i) {
    BSON_APPEND_INT32(docs[static_cast<std::size_t>(i)].b, "_id", i);
    BSON_APPEND_UTF8(docs[static_cast<std::size_t>(i)].b, "pad", pad.c_str());
    views.push_back(docs[static_cast<std::size_t>(i)].view());
  }
  DocumentSequence seq{"documents", views};
  return build_op_msg(11, 0, 0, body.view(), std::span(&seq, 1), checksum);
}

Bytes compressed(const Bytes& frame, Compressor c) {
  auto z = build_op_compressed(frame, c);
  REQUIRE(z.ok());
  return *z;
}
}  // namespace

TEST_CASE("inflate_sparse: a large compressed insert inflates only as far as the budget needs") {
  const Bytes frame = large_insert(100, 100'000);  // ~10 MB
  REQUIRE(frame.size() > 10'000'000);
  const SparseMsg plain = reduce(frame, 64 * 1024, 65536);
  REQUIRE(plain.done());
  const Bytes want(plain.frame().begin(), plain.frame().end());
  for (Compressor c : {Compressor::zlib, Compressor::zstd, Compressor::snappy}) {
    CAPTURE(to_string(c));
    const Bytes z = compressed(frame, c);
    auto r = inflate_sparse(z, 64 * 1024);
    REQUIRE_MESSAGE(r.ok(), (r ? std::string() : r.error().message()));
    CHECK(r->compressor == c);
    CHECK(r->reduced);
    // The same reduced frame as the uncompressed message gives.
    CHECK(r->frame == want);
    const OpMsg m = decoded(r->frame);
    CHECK(m.body.to_relaxed_json() == decoded(frame).body.to_relaxed_json());
    REQUIRE(m.sequences.size() == 1);
    CHECK(m.sequences[0].documents.size() >= 1);
    MESSAGE(to_string(c) << ": " << r->inflated << " of " << frame.size() - 16
                         << " bytes inflated");
    if (c == Compressor::snappy) {
      CHECK(r->inflated == frame.size() - 16);  // snappy cannot stop
    } else {
      // Stopped a chunk (64 KiB) or so past what the budget keeps.
      CHECK(r->inflated < 4 * 64 * 1024);
    }
  }
}

TEST_CASE("inflate_sparse: a compressed find reply is inflated to the end for its ok and id") {
  Owned body;
  find_reply(body, 1000, 1000, 777);
  const Bytes frame = build_op_msg(7, 3, 0, body.view());
  const SparseMsg plain = reduce(frame, 64 * 1024, frame.size());
  REQUIRE(plain.done());
  for (Compressor c : {Compressor::zlib, Compressor::zstd}) {
    CAPTURE(to_string(c));
    auto r = inflate_sparse(compressed(frame, c), 64 * 1024);
    REQUIRE(r.ok());
    CHECK(r->inflated == frame.size() - 16);
    CHECK(r->frame == Bytes(plain.frame().begin(), plain.frame().end()));
    CHECK(cursor_id(decoded(r->frame).body) == 777);
  }
}

TEST_CASE("inflate_sparse: with a checksum the rest is inflated (the checksum comes last)") {
  const Bytes frame = large_insert(20, 50'000, true);
  auto r = inflate_sparse(compressed(frame, Compressor::zstd), 64 * 1024);
  REQUIRE(r.ok());
  CHECK(r->inflated == frame.size() - 16);
  CHECK(decoded(r->frame).sequences.at(0).identifier == "documents");
}

TEST_CASE("inflate_sparse: wrong sizes, corrupt streams and other opcodes fail with the reason") {
  const Bytes frame = large_insert(5, 100'000);
  Bytes z = compressed(frame, Compressor::zlib);
  SUBCASE("truncated") {
    z.resize(z.size() - 100);
    auto r = inflate_sparse(z, 1'000'000);  // no early stop: it must reach the end
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::decompression_failed);
  }
  SUBCASE("claims more than the stream holds") {
    const std::uint32_t usize = static_cast<std::uint32_t>(frame.size() - 16 + 10);
    for (int i = 0; i < 4; ++i) z[20 + i] = static_cast<std::uint8_t>(usize >> (8 * i));
    auto r = inflate_sparse(z, 1'000'000);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::decompressed_size_mismatch);
  }
  SUBCASE("claims less than the stream holds") {
    const std::uint32_t usize = static_cast<std::uint32_t>(frame.size() - 16 - 10);
    for (int i = 0; i < 4; ++i) z[20 + i] = static_cast<std::uint8_t>(usize >> (8 * i));
    auto r = inflate_sparse(z, 1'000'000);
    REQUIRE_FALSE(r.ok());
  }
  SUBCASE("over maxMessageSize") {
    auto r = inflate_sparse(z, 64 * 1024, 100'000);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::uncompressed_size_too_large);
  }
  SUBCASE("not an OP_MSG inside") {
    z[16] = 0xD4;  // OP_QUERY (2004)
    z[17] = 0x07;
    auto r = inflate_sparse(z, 64 * 1024);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_field);
  }
}
