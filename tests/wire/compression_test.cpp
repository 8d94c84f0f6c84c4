// OP_COMPRESSED: every compressor round trips; wrong sizes, corrupt data and
// decompression bombs are refused (bombs before any allocation).
#include "varanus/wire/compression.hpp"

#include <doctest/doctest.h>

#include "support.hpp"
#include "varanus/wire/builder.hpp"
#include "varanus/wire/command.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;
using varanus::wire::test::Doc;
using varanus::wire::test::json;

namespace {
const Compressor kAll[] = {Compressor::noop, Compressor::snappy, Compressor::zlib,
                           Compressor::zstd};

void put_le32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}
}  // namespace

TEST_CASE("compressor names round trip") {
  for (Compressor c : kAll) CHECK(compressor_from_name(to_string(c)) == c);
  CHECK_FALSE(compressor_from_name("lz4").has_value());
}

TEST_CASE("compress and decompress round trip for every compressor") {
  Bytes input;
  for (int i = 0; i < 5000; ++i) input.push_back(static_cast<std::uint8_t>(i % 17));
  for (Compressor c : kAll) {
    CAPTURE(to_string(c));
    auto packed = compress(c, input);
    REQUIRE(packed.ok());
    if (c != Compressor::noop) CHECK(packed->size() < input.size());
    auto back = decompress(c, *packed, input.size(), 1 << 20);
    REQUIRE(back.ok());
    CHECK(*back == input);
    auto empty = compress(c, {});
    REQUIRE(empty.ok());
    auto eback = decompress(c, *empty, 0, 100);
    REQUIRE(eback.ok());
    CHECK(eback->empty());
  }
}

TEST_CASE("decompression that yields the wrong size is rejected") {
  Bytes input(1000, 'x');
  for (Compressor c : kAll) {
    CAPTURE(to_string(c));
    auto packed = compress(c, input);
    REQUIRE(packed.ok());
    SUBCASE("claims more than it holds") {
      auto r = decompress(c, *packed, input.size() + 1, 1 << 20);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == Errc::decompressed_size_mismatch);
    }
    SUBCASE("claims less than it holds") {
      auto r = decompress(c, *packed, input.size() - 1, 1 << 20);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == Errc::decompressed_size_mismatch);
    }
  }
}

TEST_CASE("corrupt compressed data is rejected") {
  Bytes input(1000, 'y');
  for (Compressor c : {Compressor::snappy, Compressor::zlib, Compressor::zstd}) {
    CAPTURE(to_string(c));
    auto packed = compress(c, input);
    REQUIRE(packed.ok());
    Bytes cut(packed->begin(), packed->begin() + static_cast<std::ptrdiff_t>(packed->size() / 2));
    auto r = decompress(c, cut, input.size(), 1 << 20);
    REQUIRE_FALSE(r.ok());
    const bool named = r.error().code == Errc::decompression_failed ||
                       r.error().code == Errc::decompressed_size_mismatch;
    CHECK(named);
    Bytes junk = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa};
    CHECK_FALSE(decompress(c, junk, 10, 100).ok());
  }
}

TEST_CASE("a decompression bomb beyond the bound is rejected before allocating") {
  // 40 MB of zeros compresses to a few kB; uncompressedSize states the truth,
  // but the bound is lower: refused from the header alone.
  Bytes zeros(40'000'000, 0);
  for (Compressor c : {Compressor::snappy, Compressor::zlib, Compressor::zstd}) {
    CAPTURE(to_string(c));
    auto packed = compress(c, zeros);
    REQUIRE(packed.ok());
    CHECK(packed->size() < 2'000'000);
    auto r = decompress(c, *packed, zeros.size(), 1'000'000);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::uncompressed_size_too_large);
  }
  SUBCASE("through decode: uncompressedSize over maxMessageSize") {
    Bytes f = {0,    0,    0,    0,    1,    0,    0,    0,
               0,    0,    0,    0,    0xdc, 0x07, 0,    0,      // header OP_COMPRESSED
               0xdd, 0x07, 0,    0,                              // originalOpcode OP_MSG
               0xff, 0xff, 0xff, 0x7f,                           // uncompressedSize 2^31-1
               2,                                                // zlib
               0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};  // a tiny zlib stream
    put_le32(f, 0, static_cast<std::uint32_t>(f.size()));
    auto r = decode(f);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::uncompressed_size_too_large);
    CHECK(r.error().offset == 20);
  }
  SUBCASE("exactly at the bound passes the size check") {
    Doc big(std::string(R"({"s": ")" + std::string(2000, 'a') + R"("})").c_str());
    const BsonView docs[] = {big};
    const Frame plain = build_op_reply(1, 0, 0, 0, 0, docs);
    auto f = build_op_compressed(plain, Compressor::zstd);
    REQUIRE(f.ok());
    DecodeOptions o;
    o.maxMessageSize =
        static_cast<std::int32_t>(plain.size());  // original frame exactly at the bound
    CHECK(decode(*f, o).ok());
    o.maxMessageSize -= 1;
    auto r = decode(*f, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::uncompressed_size_too_large);
  }
}

TEST_CASE("OP_COMPRESSED round trips through every compressor") {
  Doc body(R"({"insert": "c", "ordered": true, "$db": "shop"})");
  Doc d1(R"({"_id": 1, "name": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"})");
  Doc d2(R"({"_id": 2, "name": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"})");
  DocumentSequence seq{"documents", {d1.view(), d2.view()}};
  for (bool checksum : {false, true}) {
    const Frame plain = build_op_msg(77, 0, kExhaustAllowed, body, {&seq, 1}, checksum);
    for (Compressor c : kAll) {
      CAPTURE(to_string(c));
      CAPTURE(checksum);
      auto packed = build_op_compressed(plain, c, c == Compressor::zlib ? 9 : -1);
      REQUIRE(packed.ok());
      auto r = decode(*packed);
      REQUIRE(r.ok());
      CHECK(r->header.opCode == 2012);
      CHECK(r->header.requestId == 77);
      CHECK(r->opCode == 2013);
      CHECK(r->compressor == c);
      CHECK(r->owned.size() == plain.size() - 16);
      const auto& m = std::get<OpMsg>(r->body);
      CHECK(m.exhaustAllowed());
      CHECK(m.checksumPresent() == checksum);
      CHECK(m.sequences.at(0).documents.size() == 2);
      auto v = command_view(*r);
      REQUIRE(v.ok());
      CHECK(v->name == "insert");
      CHECK(v->database == "shop");
      CHECK(v->compressor == c);
      CHECK(v->opCode == 2013);
      // The decompressed message is byte for byte the original.
      CHECK(std::equal(r->owned.begin(), r->owned.end(), plain.begin() + 16));
    }
  }
  CHECK_FALSE(
      build_op_compressed(*build_op_compressed(build_op_msg(1, 0, 0, body), Compressor::noop),
                          Compressor::noop)
          .ok());
}

TEST_CASE("a corrupted checksum inside a compressed OP_MSG is caught") {
  Doc body(R"({"ping": 1, "$db": "admin"})");
  Frame plain = build_op_msg(5, 0, 0, body, {}, true);
  plain[plain.size() - 1] ^= 0xff;
  auto packed = build_op_compressed(plain, Compressor::snappy);
  REQUIRE(packed.ok());
  auto r = decode(*packed);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::bad_checksum);
}

TEST_CASE("decompress_stream hands the output in chunks and stops when told, zlib and zstd early") {
  Bytes input;
  for (int i = 0; i < 1'000'000; ++i) input.push_back(static_cast<std::uint8_t>(i % 251));
  for (Compressor c : kAll) {
    CAPTURE(to_string(c));
    auto packed = compress(c, input);
    REQUIRE(packed.ok());
    Bytes whole;
    auto all = decompress_stream(c, *packed, input.size(), 1 << 21,
                                 [&](std::span<const std::uint8_t> chunk) {
                                   CHECK(chunk.size() <= 64 * 1024);
                                   whole.insert(whole.end(), chunk.begin(), chunk.end());
                                   return true;
                                 });
    REQUIRE(all.ok());
    CHECK(*all == input.size());
    CHECK(whole == input);
    std::size_t seen = 0;
    auto first = decompress_stream(c, *packed, input.size(), 1 << 21,
                                   [&](std::span<const std::uint8_t> chunk) {
                                     seen += chunk.size();
                                     return false;  // enough
                                   });
    REQUIRE(first.ok());
    CHECK(seen <= 64 * 1024);
    if (c == Compressor::zlib || c == Compressor::zstd)
      CHECK(*first == seen);  // stopped there
    else
      CHECK(*first == input.size());  // whole first: snappy's API cannot stop
    // Wrong claims fail as decompress() fails them.
    auto more = decompress_stream(c, *packed, input.size() + 1, 1 << 21,
                                  [](std::span<const std::uint8_t>) { return true; });
    REQUIRE_FALSE(more.ok());
    auto over = decompress_stream(c, *packed, input.size(), 1000,
                                  [](std::span<const std::uint8_t>) { return true; });
    REQUIRE_FALSE(over.ok());
    CHECK(over.error().code == Errc::uncompressed_size_too_large);
  }
}
