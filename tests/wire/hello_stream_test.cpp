// One connection's hello replies found and rewritten as its bytes pass
// (HelloReplyStream): whole and split reads, OP_MSG / OP_QUERY handshakes,
// streamed hellos, unknown members, replies that must stay untouched, and
// streams that do not frame.
#include "varanus/wire/hello_stream.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>

#include "support.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus::wire;
using varanus::wire::test::Doc;

namespace {

const AddressMap kMap = {{"h1:27017", "proxy:27018"}, {"h2:27017", "proxy:27019"}};

constexpr const char* kHelloReply =
    R"({"hosts": ["h1:27017", "h2:27017"], "setName": "rs0", "isWritablePrimary": true,)"
    R"( "primary": "h1:27017", "me": "h1:27017", "ok": 1.0})";
// Not a hello reply, though it names members: left alone.
constexpr const char* kFindReply =
    R"({"cursor": {"firstBatch": [{"hosts": ["h1:27017"], "me": "h1:27017"}], "id": 0,)"
    R"( "ns": "a.b"}, "ok": 1.0})";

Frame hello_request(std::int32_t id, std::uint32_t flags = 0) {
  Doc d(R"({"hello": 1, "helloOk": true, "$db": "admin"})");
  return build_op_msg(id, 0, flags, d);
}
Frame find_request(std::int32_t id) {
  Doc d(R"({"find": "b", "filter": {}, "$db": "a"})");
  return build_op_msg(id, 0, 0, d);
}
Frame msg_reply(std::int32_t id, std::int32_t to, const char* json, std::uint32_t flags = 0) {
  Doc d(json);
  return build_op_msg(id, to, flags, d);
}

HelloReplyStream::Addresses fixed(const AddressMap& map,
                                  std::vector<std::string>* asked = nullptr) {
  return [map, asked](const std::vector<std::string>& unknown) {
    if (asked) asked->insert(asked->end(), unknown.begin(), unknown.end());
    return map;
  };
}

Frame concat(std::initializer_list<const Frame*> frames) {
  Frame out;
  for (const Frame* f : frames) out.insert(out.end(), f->begin(), f->end());
  return out;
}

/// Feeds `bytes` in pieces of the given sizes (the last takes the rest)
/// and returns everything the stream forwarded.
Frame feed_server(HelloReplyStream& s, const Frame& bytes, const std::vector<std::size_t>& cuts,
                  const HelloReplyStream::Addresses& a, std::size_t* rewritten = nullptr) {
  Frame out;
  std::size_t at = 0;
  for (std::size_t k = 0; at < bytes.size(); ++k) {
    const std::size_t n =
        k < cuts.size() ? std::min(cuts[k], bytes.size() - at) : bytes.size() - at;
    std::span<const std::uint8_t> piece(bytes.data() + at, n);
    auto o = s.server_bytes(piece, a);
    if (o.unchanged) {
      out.insert(out.end(), piece.begin(), piece.end());
    } else {
      out.insert(out.end(), o.bytes.begin(), o.bytes.end());
    }
    if (rewritten) *rewritten += o.rewritten;
    at += n;
  }
  return out;
}

Frame rewritten_reply(std::int32_t id, std::int32_t to, std::uint32_t flags = 0) {
  const Frame f = msg_reply(id, to, kHelloReply, flags);
  auto r = rewrite_hello(f, kMap);
  REQUIRE(r.ok());
  REQUIRE(r->frame);
  return *r->frame;
}

}  // namespace

TEST_CASE("a hello's reply is rewritten, other replies pass uncopied") {
  HelloReplyStream s;
  const Frame req1 = hello_request(1), req2 = find_request(2);
  s.client_bytes(concat({&req1, &req2}));
  CHECK(s.awaiting() == std::vector<std::int32_t>{1});

  const Frame findReply = msg_reply(11, 2, kFindReply);
  auto o = s.server_bytes(findReply, fixed(kMap));
  CHECK(o.unchanged);  // forwarded as it came

  const Frame helloReply = msg_reply(10, 1, kHelloReply);
  o = s.server_bytes(helloReply, fixed(kMap));
  CHECK_FALSE(o.unchanged);
  CHECK(o.rewritten == 1);
  CHECK(o.bytes == rewritten_reply(10, 1));
  CHECK(s.awaiting().empty());

  // A second reply to the same requestID is not a hello reply any more.
  o = s.server_bytes(helloReply, fixed(kMap));
  CHECK(o.unchanged);
}

TEST_CASE("any split of both directions gives the same bytes") {
  const Frame reqs = [] {
    const Frame a = find_request(1), b = hello_request(2), c = find_request(3),
                d = hello_request(4);
    return concat({&a, &b, &c, &d});
  }();
  const Frame r1 = msg_reply(11, 1, kFindReply), r2 = msg_reply(12, 2, kHelloReply),
              r3 = msg_reply(13, 3, kFindReply), r4 = msg_reply(14, 4, kHelloReply);
  const Frame replies = concat({&r1, &r2, &r3, &r4});
  const Frame w2 = rewritten_reply(12, 2), w4 = rewritten_reply(14, 4);
  const Frame expected = concat({&r1, &w2, &r3, &w4});

  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    HelloReplyStream s;
    // Client bytes in random pieces (1 byte at a time in the first round).
    for (std::size_t at = 0; at < reqs.size();) {
      const std::size_t n =
          round == 0 ? 1 : std::min<std::size_t>(1 + rng() % 40, reqs.size() - at);
      s.client_bytes({reqs.data() + at, n});
      at += n;
    }
    std::vector<std::size_t> cuts;
    for (int k = 0; k < 64; ++k) cuts.push_back(round == 0 ? 1 : 1 + rng() % 60);
    std::size_t rewritten = 0;
    const Frame out = feed_server(s, replies, cuts, fixed(kMap), &rewritten);
    REQUIRE(out == expected);
    CHECK(rewritten == 2);
    CHECK(s.take_held().empty());
  }
}

TEST_CASE("OP_QUERY isMaster, bare and $query-wrapped, gets its OP_REPLY rewritten") {
  for (const char* q : {R"({"isMaster": 1, "client": {"driver": {"name": "x"}}})",
                        R"({"$query": {"ismaster": 1}, "$readPreference": {"mode": "primary"}})"}) {
    CAPTURE(q);
    HelloReplyStream s;
    Doc query(q);
    s.client_bytes(build_op_query(5, 0, 0, "admin.$cmd", 0, -1, query));
    REQUIRE(s.awaiting() == std::vector<std::int32_t>{5});
    Doc reply(
        R"({"ismaster": true, "hosts": ["h1:27017", "h2:27017"], "me": "h2:27017", "ok": 1})");
    const BsonView docs[] = {reply};
    const Frame f = build_op_reply(50, 5, 8, 0, 0, docs);
    auto o = s.server_bytes(f, fixed(kMap));
    REQUIRE_FALSE(o.unchanged);
    CHECK(o.rewritten == 1);
    auto m = decode(o.bytes);
    REQUIRE(m.ok());
    const auto& r = std::get<OpReply>(m->body);
    CHECK(test::json(r.documents[0]).find("proxy:27019") != std::string::npos);
    CHECK(test::json(r.documents[0]).find("h1:27017") == std::string::npos);
  }
  // A query on a collection named like a command is not a hello.
  HelloReplyStream s;
  Doc query(R"({"isMaster": 1})");
  s.client_bytes(build_op_query(6, 0, 0, "admin.users", 0, -1, query));
  CHECK(s.awaiting().empty());
}

TEST_CASE("a streamed hello: every moreToCome reply is rewritten, the chain followed") {
  HelloReplyStream s;
  s.client_bytes(hello_request(1, 1u << 16));  // exhaustAllowed
  constexpr std::uint32_t kMore = 1u << 1;
  const Frame a = msg_reply(100, 1, kHelloReply, kMore);
  const Frame b = msg_reply(101, 100, kHelloReply, kMore);
  const Frame c = msg_reply(102, 101, kHelloReply, kMore);
  const Frame all = concat({&a, &b, &c});
  std::size_t rewritten = 0;
  const Frame out = feed_server(s, all, {30, 7, 200}, fixed(kMap), &rewritten);
  const Frame wa = rewritten_reply(100, 1, kMore), wb = rewritten_reply(101, 100, kMore),
              wc = rewritten_reply(102, 101, kMore);
  CHECK(out == concat({&wa, &wb, &wc}));
  CHECK(rewritten == 3);
  CHECK(s.awaiting() == std::vector<std::int32_t>{102});  // the next streamed reply answers it
}

TEST_CASE("a reply naming a member without a listener asks for it before it is forwarded") {
  HelloReplyStream s;
  s.client_bytes(hello_request(1));
  AddressMap map = {{"h1:27017", "proxy:27018"}};  // h2 unknown
  std::vector<std::vector<std::string>> asked;
  auto addresses = [&](const std::vector<std::string>& unknown) {
    asked.push_back(unknown);
    if (!unknown.empty()) map["h2:27017"] = "proxy:27019";  // the listener opens
    return map;
  };
  auto o = s.server_bytes(msg_reply(10, 1, kHelloReply), addresses);
  REQUIRE(asked.size() == 2);
  CHECK(asked[0].empty());
  CHECK(asked[1] == std::vector<std::string>{"h2:27017"});
  CHECK(o.bytes == rewritten_reply(10, 1));
}

TEST_CASE("held bytes: a reply cut by the upstream's close is handed back as it came") {
  HelloReplyStream s;
  s.client_bytes(hello_request(1));
  const Frame f = msg_reply(10, 1, kHelloReply);
  auto o = s.server_bytes({f.data(), 40}, fixed(kMap));
  CHECK_FALSE(o.unchanged);
  CHECK(o.bytes.empty());
  CHECK(s.take_held() == Frame(f.begin(), f.begin() + 40));
  // A header cut short is held too.
  HelloReplyStream t;
  o = t.server_bytes({f.data(), 9}, fixed(kMap));
  CHECK(o.bytes.empty());
  CHECK(t.take_held() == Frame(f.begin(), f.begin() + 9));
}

TEST_CASE("a stream that does not frame stops rewriting and passes everything") {
  HelloReplyStream s;
  s.client_bytes(hello_request(1));
  Frame bad = msg_reply(10, 1, kHelloReply);
  bad[0] = 3, bad[1] = bad[2] = bad[3] = 0;  // messageLength 3
  auto o = s.server_bytes(bad, fixed(kMap));
  CHECK(o.unchanged);
  CHECK(s.passthrough());
  CHECK(s.why().find("length is 3") != std::string::npos);
  const Frame good = msg_reply(11, 1, kHelloReply);
  CHECK(s.server_bytes(good, fixed(kMap)).unchanged);

  HelloReplyStream c;
  Frame neg = hello_request(1);
  neg[3] = 0x80;  // negative length
  c.client_bytes(neg);
  CHECK(c.passthrough());
  CHECK(c.awaiting().empty());
}
