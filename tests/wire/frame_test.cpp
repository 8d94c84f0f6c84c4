// Framing: check_frame, FrameReader, and decode()'s own length checks.
#include "varanus/wire/frame.hpp"

#include <doctest/doctest.h>

#include <filesystem>

#include "support.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;
using varanus::wire::test::Doc;

namespace {

// A stream of several different frames back to back.
Bytes sample_stream(std::vector<std::size_t>& lengths) {
  Doc ping(R"({"ping": 1, "$db": "admin"})");
  Doc reply(R"({"ok": 1.0})");
  Doc d1(R"({"_id": 1, "s": "xyz"})");
  Doc d2(R"({"_id": 2})");
  const BsonView docs[] = {d1, d2};
  DocumentSequence seq{"documents", {d1.view(), d2.view()}};
  std::vector<Frame> frames;
  frames.push_back(build_op_msg(1, 0, 0, ping));
  frames.push_back(build_op_msg(2, 1, 0, reply, {}, true));
  frames.push_back(build_op_msg(3, 0, kMoreToCome, ping, {&seq, 1}));
  frames.push_back(build_op_query(4, 0, 0, "admin.$cmd", 0, -1, ping));
  frames.push_back(build_op_reply(5, 4, 0, 0, 0, docs));
  Bytes out;
  for (const auto& f : frames) {
    lengths.push_back(f.size());
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

std::vector<Bytes> drain(FrameReader& r) {
  std::vector<Bytes> out;
  for (;;) {
    auto n = r.next();
    if (n.status != FrameStatus::frame) break;
    out.emplace_back(n.frame.begin(), n.frame.end());
  }
  return out;
}

Bytes le32(std::int32_t v) {
  const auto u = static_cast<std::uint32_t>(v);
  return {static_cast<std::uint8_t>(u), static_cast<std::uint8_t>(u >> 8),
          static_cast<std::uint8_t>(u >> 16), static_cast<std::uint8_t>(u >> 24)};
}

}  // namespace

TEST_CASE("decoder waits for a complete frame") {
  std::vector<std::size_t> lengths;
  const Bytes stream = sample_stream(lengths);
  const std::span<const std::uint8_t> first(stream.data(), lengths[0]);

  SUBCASE("nothing buffered") {
    auto c = check_frame({});
    CHECK(c.status == FrameStatus::need_more);
    CHECK(c.length == 0);
  }
  SUBCASE("fewer than 4 bytes: length unknown") {
    auto c = check_frame(first.first(3));
    CHECK(c.status == FrameStatus::need_more);
    CHECK(c.length == 0);
  }
  SUBCASE("length known, body missing") {
    auto c = check_frame(first.first(4));
    CHECK(c.status == FrameStatus::need_more);
    CHECK(c.length == lengths[0]);
  }
  SUBCASE("header only") {
    CHECK(check_frame(first.first(16)).status == FrameStatus::need_more);
  }
  SUBCASE("all but the last byte") {
    CHECK(check_frame(first.first(first.size() - 1)).status == FrameStatus::need_more);
    FrameReader r;
    r.feed(first.first(first.size() - 1));
    CHECK(r.next().status == FrameStatus::need_more);
    CHECK(r.buffered() == first.size() - 1);
    CHECK(r.consumed() == 0);
    r.feed(first.last(1));
    auto n = r.next();
    REQUIRE(n.status == FrameStatus::frame);
    CHECK(n.frame.size() == first.size());
    CHECK(r.consumed() == first.size());
    CHECK(r.buffered() == 0);
  }
  SUBCASE("exactly one frame") {
    auto c = check_frame(first);
    CHECK(c.status == FrameStatus::frame);
    CHECK(c.length == first.size());
  }
  SUBCASE("a frame followed by part of the next") {
    auto c = check_frame({stream.data(), lengths[0] + 5});
    CHECK(c.status == FrameStatus::frame);
    CHECK(c.length == lengths[0]);
  }
}

TEST_CASE("frames split at every byte boundary decode to the same result") {
  std::vector<std::size_t> lengths;
  const Bytes stream = sample_stream(lengths);
  FrameReader whole;
  whole.feed(stream);
  const auto expected = drain(whole);
  REQUIRE(expected.size() == lengths.size());
  for (std::size_t i = 0; i < expected.size(); ++i) CHECK(expected[i].size() == lengths[i]);

  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    FrameReader r;
    std::vector<Bytes> got;
    r.feed({stream.data(), cut});
    for (auto& f : drain(r)) got.push_back(std::move(f));
    r.feed({stream.data() + cut, stream.size() - cut});
    for (auto& f : drain(r)) got.push_back(std::move(f));
    REQUIRE_MESSAGE(got == expected, "split at " << cut);
    CHECK(r.consumed() == stream.size());
    CHECK(r.buffered() == 0);
  }

  SUBCASE("one byte at a time") {
    FrameReader r;
    std::vector<Bytes> got;
    for (std::uint8_t b : stream) {
      r.feed({&b, 1});
      for (auto& f : drain(r)) got.push_back(std::move(f));
    }
    CHECK(got == expected);
  }
  SUBCASE("every decoded message is the same whatever the chunking") {
    FrameReader r;
    std::size_t i = 0;
    for (std::size_t pos = 0; pos < stream.size(); pos += 7) {
      r.feed({stream.data() + pos, std::min<std::size_t>(7, stream.size() - pos)});
      for (;;) {
        auto n = r.next();
        if (n.status != FrameStatus::frame) break;
        auto a = decode(n.frame);
        auto b = decode(expected.at(i));
        REQUIRE(a.ok());
        REQUIRE(b.ok());
        CHECK(a->header.requestId == b->header.requestId);
        CHECK(a->opCode == b->opCode);
        ++i;
      }
    }
    CHECK(i == expected.size());
  }
}

TEST_CASE("frame lengths out of range are refused before buffering") {
  SUBCASE("length 16 (header only) is too small") {
    auto c = check_frame(le32(16));
    CHECK(c.status == FrameStatus::error);
    REQUIRE(c.error);
    CHECK(c.error->code == Errc::length_too_small);
  }
  SUBCASE("zero and negative lengths are too small") {
    CHECK(check_frame(le32(0)).error->code == Errc::length_too_small);
    CHECK(check_frame(le32(-5)).error->code == Errc::length_too_small);
  }
  SUBCASE("17 is the smallest acceptable length") {
    CHECK(check_frame(le32(17)).status == FrameStatus::need_more);
  }
  SUBCASE("over the maximum") {
    auto c = check_frame(le32(kDefaultMaxMessageSize + 1));
    CHECK(c.status == FrameStatus::error);
    CHECK(c.error->code == Errc::length_too_large);
    CHECK(check_frame(le32(kDefaultMaxMessageSize)).status == FrameStatus::need_more);
    CHECK(check_frame(le32(1000), 999).error->code == Errc::length_too_large);
  }
  SUBCASE("the reader fails at once and buffers nothing of the frame") {
    FrameReader r(1000);
    Bytes huge = le32(100'000'000);
    huge.resize(4096, 0xab);
    r.feed(huge);
    CHECK(r.failed());
    CHECK(r.buffered() == 0);
    auto n = r.next();
    CHECK(n.status == FrameStatus::error);
    CHECK(n.error->code == Errc::length_too_large);
    r.feed(huge);  // ignored after the error
    CHECK(r.buffered() == 0);
    CHECK(r.next().status == FrameStatus::error);  // sticky
  }
  SUBCASE("error offset is relative to the stream start") {
    std::vector<std::size_t> lengths;
    Bytes stream = sample_stream(lengths);
    const std::size_t good = stream.size();
    const Bytes bad = le32(3);
    stream.insert(stream.end(), bad.begin(), bad.end());
    FrameReader r;
    r.feed(stream);
    CHECK(drain(r).size() == lengths.size());
    auto n = r.next();
    REQUIRE(n.status == FrameStatus::error);
    CHECK(n.error->code == Errc::length_too_small);
    CHECK(n.error->offset == good);
  }
  SUBCASE("a split length prefix is still checked") {
    FrameReader r(1000);
    const Bytes len = le32(5000);
    r.feed({len.data(), 2});
    CHECK_FALSE(r.failed());
    r.feed({len.data() + 2, 2});
    CHECK(r.failed());
  }
}

TEST_CASE("decode checks the frame it is given") {
  Doc ping(R"({"ping": 1})");
  const Frame f = build_op_msg(1, 0, 0, ping);
  SUBCASE("truncated header") {
    auto r = decode({f.data(), 15});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::truncated);
    CHECK_FALSE(read_header({f.data(), 15}).ok());
  }
  SUBCASE("truncated body") {
    auto r = decode({f.data(), f.size() - 1});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::truncated);
    CHECK(r.error().offset == f.size() - 1);
  }
  SUBCASE("bytes beyond messageLength") {
    Bytes g = f;
    g.push_back(0);
    auto r = decode(g);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::trailing_bytes);
    CHECK(r.error().offset == f.size());
  }
  SUBCASE("length <= 16") {
    Bytes g = f;
    g[0] = 16;
    g[1] = 0;
    auto r = decode(g);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::length_too_small);
  }
  SUBCASE("length > max") {
    DecodeOptions o;
    o.maxMessageSize = static_cast<std::int32_t>(f.size()) - 1;
    auto r = decode(f, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::length_too_large);
  }
  SUBCASE("header fields") {
    auto h = read_header(f);
    REQUIRE(h.ok());
    CHECK(h->messageLength == static_cast<std::int32_t>(f.size()));
    CHECK(h->requestId == 1);
    CHECK(h->opCode == 2013);
  }
}

TEST_CASE("every fuzz seed is a sound stream of frames") {
  // fuzz/corpus: recorded testdata and builder-made frames behind the fuzz
  // target's one control byte. They must stay decodable, or the fuzzer
  // starts from noise.
  std::size_t seeds = 0;
  for (const auto& e : std::filesystem::directory_iterator(VARANUS_FUZZ_CORPUS_DIR)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("seed_", 0) != 0 && name.rfind("testdata_", 0) != 0) continue;
    CAPTURE(name);
    ++seeds;
    const Bytes b = varanus::wire::test::read_file(e.path().string());
    REQUIRE(b.size() > 17);
    FrameReader r;
    r.feed({b.data() + 1, b.size() - 1});
    std::size_t frames = 0;
    for (;;) {
      auto n = r.next();
      if (n.status != FrameStatus::frame) break;
      auto m = decode(n.frame);
      REQUIRE_MESSAGE(m.ok(), m.error().message());
      ++frames;
    }
    CHECK(frames >= 1);
    CHECK(r.buffered() == 0);
  }
  CHECK(seeds >= 20);
}

TEST_CASE("the reader copies only frames that continue in later input") {
  std::vector<std::size_t> lengths;
  const Bytes stream = sample_stream(lengths);
  SUBCASE("whole frames are handed out in place") {
    FrameReader r;
    r.feed(stream);
    auto n = r.next();
    REQUIRE(n.status == FrameStatus::frame);
    CHECK(n.frame.data() == stream.data());  // no copy
    n = r.next();
    REQUIRE(n.status == FrameStatus::frame);
    CHECK(n.frame.data() == stream.data() + lengths[0]);
  }
  SUBCASE("fed twice without draining, several frames are still read in order") {
    FrameReader r;
    const std::size_t cut = lengths[0] + lengths[1] + 3;
    r.feed({stream.data(), cut});
    r.feed({stream.data() + cut, stream.size() - cut});
    std::size_t total = 0;
    std::size_t count = 0;
    for (;;) {
      auto n = r.next();
      if (n.status != FrameStatus::frame) break;
      CHECK(n.frame.size() == lengths[count]);
      CHECK(std::equal(n.frame.begin(), n.frame.end(),
                       stream.begin() + static_cast<std::ptrdiff_t>(total)));
      total += n.frame.size();
      ++count;
    }
    CHECK(count == lengths.size());
    CHECK(r.buffered() == 0);
  }
}
