// Hello replies with member addresses replaced, on byte vectors: every
// opcode a reply comes in, with and without checksum, each compressor, each
// address field, unknown members, and what must stay untouched.
#include "varanus/wire/hello_rewrite.hpp"

#include <doctest/doctest.h>

#include <string>

#include "support.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus::wire;
using varanus::wire::test::Doc;
using varanus::wire::test::json;

namespace {

const AddressMap kMap = {
    {"h1:27017", "proxy:27018"},
    {"h2:27017", "proxy:27019"},
    {"h3:27017", "proxy:27020"},
};

constexpr const char* kHello =
    R"({"topologyVersion": {"processId": {"$oid": "5f1d5a2e8c1a2b3c4d5e6f70"}, "counter": 3},)"
    R"( "hosts": ["h1:27017", "H2:27017"], "passives": ["h3:27017"],)"
    R"( "arbiters": ["h3:27017"], "setName": "rs0", "setVersion": 1,)"
    R"( "isWritablePrimary": true, "secondary": false, "primary": "h1:27017",)"
    R"( "me": "h1:27017", "maxWireVersion": 17, "ok": 1.0})";

constexpr const char* kRewritten =
    R"({ "topologyVersion" : { "processId" : { "$oid" : "5f1d5a2e8c1a2b3c4d5e6f70" }, "counter" : 3 },)"
    R"( "hosts" : [ "proxy:27018", "proxy:27019" ], "passives" : [ "proxy:27020" ],)"
    R"( "arbiters" : [ "proxy:27020" ], "setName" : "rs0", "setVersion" : 1,)"
    R"( "isWritablePrimary" : true, "secondary" : false, "primary" : "proxy:27018",)"
    R"( "me" : "proxy:27018", "maxWireVersion" : 17, "ok" : 1.0 })";

/// The body of a rewritten frame, decoded with its checksum verified.
std::string body_of(const Frame& f) {
  auto m = decode(f);
  REQUIRE_MESSAGE(m.ok(), m.error().message());
  if (const auto* msg = std::get_if<OpMsg>(&m->body)) return json(msg->body);
  const auto& reply = std::get<OpReply>(m->body);
  REQUIRE(reply.documents.size() >= 1);
  return json(reply.documents[0]);
}

std::int32_t length_of(const Frame& f) {
  return read_header(f)->messageLength;
}

}  // namespace

TEST_CASE("OP_MSG without checksum: every address field rewritten, the rest kept in order") {
  Doc hello(kHello);
  const Frame f = build_op_msg(7, 42, 0, hello);
  auto r = rewrite_hello(f, kMap);
  REQUIRE(r.ok());
  REQUIRE(r->frame);
  CHECK(r->unknown.empty());
  CHECK(r->replaced == 6);  // 2 hosts (H2 matched lowercased), passive, arbiter, primary, me
  CHECK(body_of(*r->frame) == kRewritten);
  CHECK(length_of(*r->frame) == static_cast<std::int32_t>(r->frame->size()));
  const auto h = read_header(*r->frame);
  CHECK(h->requestId == 7);
  CHECK(h->responseTo == 42);
}

TEST_CASE("OP_MSG with checksum: the CRC-32C is recomputed") {
  Doc hello(kHello);
  const Frame f = build_op_msg(7, 42, 0, hello, {}, /*checksum=*/true);
  auto r = rewrite_hello(f, kMap);
  REQUIRE(r.ok());
  REQUIRE(r->frame);
  auto m = decode(*r->frame);  // verifies the checksum
  REQUIRE_MESSAGE(m.ok(), m.error().message());
  CHECK(std::get<OpMsg>(m->body).checksumPresent());
  CHECK(body_of(*r->frame) == kRewritten);
  // The same bytes as a message built from the rewritten body.
  Doc expected(kRewritten);
  CHECK(*r->frame == build_op_msg(7, 42, 0, expected, {}, true));
}

TEST_CASE("OP_MSG: a document sequence after the body is kept byte for byte") {
  Doc hello(kHello);
  Doc item(R"({"x": 1})");
  DocumentSequence seq{"extra", {item.view()}};
  const Frame f = build_op_msg(1, 2, 0, hello, std::span(&seq, 1), true);
  auto r = rewrite_hello(f, kMap);
  REQUIRE(r.ok());
  REQUIRE(r->frame);
  Doc expected(kRewritten);
  CHECK(*r->frame == build_op_msg(1, 2, 0, expected, std::span(&seq, 1), true));
}

TEST_CASE("OP_REPLY (isMaster over OP_QUERY): rewritten, the reply fields kept") {
  Doc ismaster(R"({"ismaster": false, "secondary": true, "hosts": ["h1:27017", "h2:27017"],)"
               R"( "primary": "h1:27017", "me": "h2:27017", "ok": 1.0})");
  const BsonView docs[] = {ismaster.view()};
  const Frame f = build_op_reply(9, 3, 8, 0, 0, docs);
  auto r = rewrite_hello(f, kMap);
  REQUIRE(r.ok());
  REQUIRE(r->frame);
  CHECK(r->replaced == 4);
  CHECK(body_of(*r->frame) ==
        R"({ "ismaster" : false, "secondary" : true, "hosts" : [ "proxy:27018", "proxy:27019" ],)"
        R"( "primary" : "proxy:27018", "me" : "proxy:27019", "ok" : 1.0 })");
  auto m = decode(*r->frame);
  const auto& reply = std::get<OpReply>(m->body);
  CHECK(reply.responseFlags == 8);
  CHECK(reply.numberReturned == 1);
}

TEST_CASE("OP_COMPRESSED: recompressed with the same compressor") {
  Doc hello(kHello);
  for (Compressor c : {Compressor::snappy, Compressor::zlib, Compressor::zstd, Compressor::noop}) {
    CAPTURE(to_string(c));
    for (bool checksum : {false, true}) {
      CAPTURE(checksum);
      auto f = build_op_compressed(build_op_msg(5, 6, 0, hello, {}, checksum), c);
      REQUIRE(f.ok());
      auto r = rewrite_hello(*f, kMap);
      REQUIRE(r.ok());
      REQUIRE(r->frame);
      auto m = decode(*r->frame);  // decompresses and verifies the inner checksum
      REQUIRE_MESSAGE(m.ok(), m.error().message());
      CHECK(m->compressor == c);
      CHECK(m->header.requestId == 5);
      CHECK(m->header.responseTo == 6);
      CHECK(m->opCode == static_cast<std::int32_t>(OpCode::msg));
      CHECK(json(std::get<OpMsg>(m->body).body) == kRewritten);
    }
    // An OP_REPLY inside OP_COMPRESSED too.
    const BsonView docs[] = {hello.view()};
    auto f = build_op_compressed(build_op_reply(1, 2, 0, 0, 0, docs), c);
    REQUIRE(f.ok());
    auto r = rewrite_hello(*f, kMap);
    REQUIRE(r.ok());
    REQUIRE(r->frame);
    CHECK(body_of(*r->frame) == kRewritten);
    CHECK(decode(*r->frame)->compressor == c);
  }
}

TEST_CASE("each address field on its own") {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {R"({"isWritablePrimary": true, "hosts": ["h1:27017"]})",
       R"({ "isWritablePrimary" : true, "hosts" : [ "proxy:27018" ] })"},
      {R"({"isWritablePrimary": false, "passives": ["h2:27017"]})",
       R"({ "isWritablePrimary" : false, "passives" : [ "proxy:27019" ] })"},
      {R"({"isWritablePrimary": false, "arbiters": ["h3:27017"]})",
       R"({ "isWritablePrimary" : false, "arbiters" : [ "proxy:27020" ] })"},
      {R"({"isWritablePrimary": false, "primary": "h1:27017"})",
       R"({ "isWritablePrimary" : false, "primary" : "proxy:27018" })"},
      {R"({"ismaster": false, "me": "h2:27017"})",
       R"({ "ismaster" : false, "me" : "proxy:27019" })"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.in);
    Doc d(c.in);
    auto r = rewrite_hello(build_op_msg(1, 1, 0, d), kMap);
    REQUIRE(r.ok());
    REQUIRE(r->frame);
    CHECK(r->replaced == 1);
    CHECK(body_of(*r->frame) == c.out);
  }
}

TEST_CASE("a reply naming an unknown member: listed, left as it was, the others rewritten") {
  Doc hello(R"({"isWritablePrimary": true, "hosts": ["h1:27017", "New4:27017", "h5:27017"],)"
            R"( "passives": ["new4:27017"], "primary": "h1:27017", "me": "h1:27017"})");
  auto r = rewrite_hello(build_op_msg(1, 1, 0, hello), kMap);
  REQUIRE(r.ok());
  CHECK(r->unknown == std::vector<std::string>{"new4:27017", "h5:27017"});
  REQUIRE(r->frame);
  CHECK(body_of(*r->frame) ==
        R"({ "isWritablePrimary" : true, "hosts" : [ "proxy:27018", "New4:27017", "h5:27017" ],)"
        R"( "passives" : [ "new4:27017" ], "primary" : "proxy:27018", "me" : "proxy:27018" })");

  // Once the caller has listeners for them, a second call rewrites everything.
  AddressMap more = kMap;
  more["new4:27017"] = "proxy:27021";
  more["h5:27017"] = "proxy:27022";
  auto again = rewrite_hello(build_op_msg(1, 1, 0, hello), more);
  REQUIRE(again.ok());
  CHECK(again->unknown.empty());
  CHECK(again->replaced == 6);

  // Only unknown members: nothing replaced, no copy, but the list is there.
  Doc only(R"({"isWritablePrimary": true, "hosts": ["x:1"]})");
  auto none = rewrite_hello(build_op_msg(1, 1, 0, only), kMap);
  REQUIRE(none.ok());
  CHECK_FALSE(none->frame);
  CHECK(none->unknown == std::vector<std::string>{"x:1"});
}

TEST_CASE("untouched: non-hello replies, hellos without addresses, requests, other opcodes") {
  Doc find(R"({"cursor": {"id": 0, "ns": "db.c", "firstBatch": [{"hosts": ["h1:27017"]}]},)"
           R"( "ok": 1.0, "primary": "h1:27017"})");
  auto r1 = rewrite_hello(build_op_msg(1, 1, 0, find), kMap);
  REQUIRE(r1.ok());
  CHECK_FALSE(r1->frame);
  CHECK(r1->unknown.empty());

  Doc standalone(R"({"isWritablePrimary": true, "maxWireVersion": 17, "ok": 1.0})");
  auto r2 = rewrite_hello(build_op_msg(1, 1, 0, standalone), kMap);
  REQUIRE(r2.ok());
  CHECK_FALSE(r2->frame);

  Doc query(R"({"find": "c", "filter": {"me": "h1:27017"}})");
  auto r3 = rewrite_hello(build_op_query(1, 0, 0, "db.$cmd", 0, -1, query), kMap);
  REQUIRE(r3.ok());
  CHECK_FALSE(r3->frame);

  // A non-string address is left alone rather than guessed at.
  Doc odd(R"({"isWritablePrimary": true, "me": 5, "hosts": [1, "h1:27017"]})");
  auto r4 = rewrite_hello(build_op_msg(1, 1, 0, odd), kMap);
  REQUIRE(r4.ok());
  REQUIRE(r4->frame);
  CHECK(body_of(*r4->frame) ==
        R"({ "isWritablePrimary" : true, "me" : 5, "hosts" : [ 1, "proxy:27018" ] })");
}

TEST_CASE("a frame that does not decode is an error, not a guess") {
  Doc hello(kHello);
  Frame f = build_op_msg(1, 1, 0, hello, {}, true);
  f.back() ^= 0xFF;  // checksum broken
  auto r = rewrite_hello(f, kMap);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::bad_checksum);
  Frame short_frame(f.begin(), f.begin() + 10);
  CHECK_FALSE(rewrite_hello(short_frame, kMap).ok());
}
