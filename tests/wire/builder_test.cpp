// Builders and decoder agree: whatever a builder writes decodes back to
// the same fields, and the command view sees what the builder was given.
#include "varanus/wire/builder.hpp"

#include <bson/bson.h>
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "support.hpp"
#include "varanus/wire/command.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;
using varanus::wire::test::Doc;
using varanus::wire::test::json;

TEST_CASE("OP_MSG builder round trips through the decoder") {
  Doc body(R"({"update": "c", "ordered": false, "$db": "shop"})");
  Doc u1(R"({"q": {"_id": 1}, "u": {"$set": {"x": 1}}})");
  Doc u2(R"({"q": {"_id": 2}, "u": {"$set": {"x": 2}}, "upsert": true})");
  Doc lonely(R"({"x": 1})");
  std::vector<DocumentSequence> seqs = {
      {"updates", {u1.view(), u2.view()}}, {"extra", {lonely.view()}}, {"empty", {}}};
  for (bool checksum : {false, true}) {
    for (std::uint32_t flags : {0u, kMoreToCome, kExhaustAllowed}) {
      CAPTURE(checksum);
      CAPTURE(flags);
      const Frame f = build_op_msg(-123456, 99, flags, body, seqs, checksum);
      auto h = read_header(f);
      REQUIRE(h.ok());
      CHECK(h->messageLength == static_cast<std::int32_t>(f.size()));
      auto r = decode(f);
      REQUIRE(r.ok());
      CHECK(r->header.requestId == -123456);
      CHECK(r->header.responseTo == 99);
      const auto& m = std::get<OpMsg>(r->body);
      CHECK(m.sectionCount == 4);
      CHECK(m.checksumPresent() == checksum);
      CHECK(m.moreToCome() == (flags == kMoreToCome));
      CHECK(json(m.body) == json(body));
      REQUIRE(m.sequences.size() == 3);
      CHECK(m.sequences[0].identifier == "updates");
      CHECK(json(m.sequences[0].documents[1]) == json(u2));
      CHECK(m.sequences[1].documents.size() == 1);
      CHECK(m.sequences[2].identifier == "empty");
      CHECK(m.sequences[2].documents.empty());
      auto v = command_view(*r);
      REQUIRE(v.ok());
      CHECK(v->name == "update");
      CHECK(v->database == "shop");
      CHECK(v->checksumPresent == checksum);
      const BsonBytes merged = merged_command(*v);
      Doc expect(R"({"update": "c", "ordered": false, "$db": "shop",
                     "updates": [{"q": {"_id": 1}, "u": {"$set": {"x": 1}}},
                                 {"q": {"_id": 2}, "u": {"$set": {"x": 2}}, "upsert": true}],
                     "extra": [{"x": 1}], "empty": []})");
      CHECK(json({merged.data(), static_cast<std::uint32_t>(merged.size())}) == json(expect));
    }
  }
}

TEST_CASE("OP_QUERY and OP_REPLY builders round trip") {
  Doc q(R"({"isMaster": 1, "helloOk": true, "client": {"driver": {"name": "t"}}})");
  Doc sel(R"({"a": 1})");
  const Frame f = build_op_query(1, 0, kQueryExhaust, "admin.$cmd", 3, -1, q, sel.view());
  auto r = decode(f);
  REQUIRE(r.ok());
  const auto& m = std::get<OpQuery>(r->body);
  CHECK(m.exhaust());
  CHECK(m.numberToSkip == 3);
  CHECK(json(m.query) == json(q));
  REQUIRE(m.returnFieldsSelector.has_value());
  CHECK(json(*m.returnFieldsSelector) == json(sel));
  auto v = command_view(*r);
  REQUIRE(v.ok());
  CHECK(v->name == "isMaster");
  CHECK(v->exhaustAllowed);

  Doc a(R"({"_id": 1})"), b(R"({"_id": 2})");
  const BsonView docs[] = {a, b};
  const Frame rr_frame = build_op_reply(2, 1, kReplyCursorNotFound, -7, 5, docs);
  auto rr = decode(rr_frame);
  REQUIRE(rr.ok());
  const auto& p = std::get<OpReply>(rr->body);
  CHECK(p.cursorNotFound());
  CHECK(p.cursorId == -7);
  CHECK(p.startingFrom == 5);
  CHECK(p.numberReturned == 2);
  CHECK(p.documents.size() == 2);
  const Frame empty_frame = build_op_reply(3, 1, 0, 0, 0, {});
  auto empty = decode(empty_frame);
  REQUIRE(empty.ok());
  CHECK(std::get<OpReply>(empty->body).documents.empty());
}

TEST_CASE("OP_COMMAND builder round trips with input documents") {
  Doc meta(R"({"$replData": 1})"), args(R"({"insert": "c"})"), in(R"({"_id": 1})");
  const BsonView ins[] = {in, in};
  const Frame r_frame = build_op_command(1, "db", "insert", meta, args, ins);
  auto r = decode(r_frame);
  REQUIRE(r.ok());
  const auto& c = std::get<OpCommand>(r->body);
  CHECK(c.inputDocs.size() == 2);
  CHECK(json(c.metadata) == json(meta));
  CHECK(json(c.commandArgs) == json(args));
  const Frame rr_frame = build_op_command_reply(2, 1, meta, args, ins);
  auto rr = decode(rr_frame);
  REQUIRE(rr.ok());
  CHECK(std::get<OpCommandReply>(rr->body).outputDocs.size() == 2);
}

TEST_CASE("command view helpers") {
  Doc d(R"({"find": "c", "$db": "x"})");
  CHECK(first_key(d) == "find");
  Doc e(R"({})");
  CHECK(first_key(e).empty());
  CHECK(first_key(BsonView{}).empty());
  SUBCASE("empty OP_MSG body is not a command") {
    const Frame r_frame = build_op_msg(1, 0, 0, e);
    auto r = decode(r_frame);
    REQUIRE(r.ok());
    auto v = command_view(*r);
    REQUIRE_FALSE(v.ok());
    CHECK(v.error().code == Errc::invalid_field);
  }
  SUBCASE("OP_MSG without $db has an empty database") {
    Doc nodb(R"({"ping": 1})");
    const Frame r_frame = build_op_msg(1, 0, 0, nodb);
    auto r = decode(r_frame);
    REQUIRE(r.ok());
    auto v = command_view(*r);
    REQUIRE(v.ok());
    CHECK(v->database.empty());
    const BsonBytes merged = merged_command(*v);  // no sequences: the body itself
    CHECK(json({merged.data(), static_cast<std::uint32_t>(merged.size())}) == json(nodb));
  }
  SUBCASE("validate_bson") {
    CHECK(validate_bson(d));
    CHECK_FALSE(validate_bson(BsonView{}));
    Bytes bad(d.view().data, d.view().data + d.view().size);
    bad[4] = 0x55;  // unknown element type
    CHECK_FALSE(validate_bson({bad.data(), static_cast<std::uint32_t>(bad.size())}));
  }
  SUBCASE("error message format") {
    Error e2{Errc::truncated, 12, "x needs 4 bytes"};
    CHECK(e2.message() == "truncated at offset 12: x needs 4 bytes");
    CHECK(to_string(Errc::uncompressed_size_too_large) == "uncompressed_size_too_large");
    CHECK(opcode_name(2013) == "OP_MSG");
    CHECK(opcode_name(1) == "OP_REPLY");
    CHECK(opcode_name(2011) == "OP_COMMANDREPLY");
  }
}

namespace {

// The merge as libbson builds it (bson_concat + array appends): what
// merged_command's hand-written bytes must equal exactly.
BsonBytes libbson_merge(const CommandView& view) {
  bson_t body;
  if (!view.body.init_static(&body)) return BsonBytes{5, 0, 0, 0, 0};
  bson_t out;
  bson_init(&out);
  bson_concat(&out, &body);
  for (const DocumentSequence& seq : *view.sequences) {
    bson_t arr;
    bson_append_array_begin(&out, seq.identifier.data(), static_cast<int>(seq.identifier.size()),
                            &arr);
    char keybuf[16];
    std::uint32_t i = 0;
    for (const BsonView& d : seq.documents) {
      bson_t doc;
      if (!d.init_static(&doc)) continue;
      const char* key = nullptr;
      const std::size_t klen = bson_uint32_to_string(i++, &key, keybuf, sizeof keybuf);
      bson_append_document(&arr, key, static_cast<int>(klen), &doc);
    }
    bson_append_array_end(&out, &arr);
  }
  BsonBytes bytes(bson_get_data(&out), bson_get_data(&out) + out.len);
  bson_destroy(&out);
  return bytes;
}

}  // namespace

TEST_CASE("merged_command writes exactly the bytes libbson would, into the buffer it is given") {
  Doc body(R"({"insert": "c", "ordered": true, "lsid": {"id": 1}, "$db": "shop"})");
  std::vector<std::unique_ptr<Doc>> docs;
  for (int i = 0; i < 120; ++i) {
    const std::string j = R"({"_id": )" + std::to_string(i) + R"(, "name": ")" +
                          std::string(static_cast<std::size_t>(i % 17), 'x') + R"(", "n": [1, 2]})";
    docs.push_back(std::make_unique<Doc>(j.c_str()));
  }
  // 0, 1, 11 and 120 documents (keys of one, two and three digits), two
  // sequences, an empty one, and one document that is not framed.
  const std::uint8_t broken[6] = {9, 0, 0, 0, 0x10, 0};
  for (std::size_t n : {0u, 1u, 11u, 120u}) {
    CAPTURE(n);
    std::vector<BsonView> first;
    for (std::size_t i = 0; i < n; ++i) first.push_back(docs[i]->view());
    std::vector<BsonView> second = {docs[3]->view(), BsonView{broken, 6}, docs[4]->view()};
    std::vector<DocumentSequence> seqs = {{"documents", first}, {"x", second}, {"empty", {}}};
    CommandView v;
    v.body = body.view();
    v.sequences = &seqs;
    const BsonBytes expect = libbson_merge(v);
    CHECK(merged_command(v) == expect);
    // A spare buffer with old contents: overwritten, and reused when large enough.
    BsonBytes spare(200, 0xee);
    spare.reserve(1 << 16);
    const std::uint8_t* storage = spare.data();
    const BsonBytes again = merged_command(v, std::move(spare));
    CHECK(again == expect);
    CHECK(again.data() == storage);
  }
  // A body that is not framed: the empty document, as before.
  CommandView bad;
  const std::uint8_t junk[5] = {7, 0, 0, 0, 0};
  bad.body = BsonView{junk, 5};
  std::vector<DocumentSequence> none;
  bad.sequences = &none;
  CHECK(merged_command(bad) == BsonBytes{5, 0, 0, 0, 0});
}
