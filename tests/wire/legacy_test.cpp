// OP_QUERY, OP_REPLY, OP_COMMAND(REPLY), the legacy CRUD opcodes, an unknown
// opcode and a noop OP_COMPRESSED: byte vectors with a comment per field.
#include <doctest/doctest.h>

#include "support.hpp"
#include "varanus/wire/builder.hpp"
#include "varanus/wire/command.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;
using varanus::wire::test::Doc;
using varanus::wire::test::json;

// {isMaster: 1}: 19 bytes.
#define IS_MASTER_DOC                                                  \
  0x13, 0, 0, 0,                                       /* length 19 */ \
      0x10, 'i', 's', 'M', 'a', 's', 't', 'e', 'r', 0, /* int32 */     \
      1, 0, 0, 0,                                      /*   = 1 */     \
      0                                                /* terminator */
// {ok: 1.0}: 17 bytes.
#define OK_DOC                                        \
  0x11, 0, 0, 0,                    /* length 17 */   \
      0x01, 'o', 'k', 0,            /* double "ok" */ \
      0, 0, 0, 0, 0, 0, 0xf0, 0x3f, /*   = 1.0 */     \
      0                             /* terminator */
// {_id: N}: 14 bytes.
#define ID_DOC(n) 0x0e, 0, 0, 0, 0x10, '_', 'i', 'd', 0, n, 0, 0, 0, 0
// {}: 5 bytes.
#define EMPTY_DOC 5, 0, 0, 0, 0

TEST_CASE("OP_QUERY on <db>.$cmd is a command") {
  const Bytes b = {
      0x3a,
      0,
      0,
      0,  // messageLength 58
      1,
      0,
      0,
      0,  // requestID 1
      0,
      0,
      0,
      0,  // responseTo 0
      0xd4,
      0x07,
      0,
      0,  // opCode 2004 OP_QUERY
      4,
      0,
      0,
      0,  // flags: SecondaryOk
      'a',
      'd',
      'm',
      'i',
      'n',
      '.',
      '$',
      'c',
      'm',
      'd',
      0,  // fullCollectionName
      0,
      0,
      0,
      0,  // numberToSkip 0
      0xff,
      0xff,
      0xff,
      0xff,           // numberToReturn -1
      IS_MASTER_DOC,  // query
  };
  auto r = decode(b);
  REQUIRE(r.ok());
  CHECK(r->opCode == 2004);
  const auto& q = std::get<OpQuery>(r->body);
  CHECK(q.flags == kQuerySecondaryOk);
  CHECK(q.fullCollectionName == "admin.$cmd");
  CHECK(q.database() == "admin");
  CHECK(q.collection() == "$cmd");
  CHECK(q.isCommand());
  CHECK(q.numberToSkip == 0);
  CHECK(q.numberToReturn == -1);
  CHECK(json(q.query) == R"({ "isMaster" : 1 })");
  CHECK_FALSE(q.returnFieldsSelector.has_value());
  auto v = command_view(*r);
  REQUIRE(v.ok());
  CHECK(v->name == "isMaster");
  CHECK(v->database == "admin");
  CHECK(v->sequences == nullptr);
  CHECK(v->opCode == 2004);

  SUBCASE("with a field selector") {
    Bytes s = b;
    s.insert(s.end(), {EMPTY_DOC});
    s[0] = 0x3f;  // messageLength 63
    auto r2 = decode(s);
    REQUIRE(r2.ok());
    CHECK(std::get<OpQuery>(r2->body).returnFieldsSelector.has_value());
  }
  SUBCASE("collection name without NUL") {
    Bytes s(b.begin(), b.begin() + 26);  // header, flags, "admin."
    s[0] = 26;
    auto r2 = decode(s);
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().code == Errc::invalid_cstring);
    CHECK(r2.error().offset == 20);
  }
  SUBCASE("query document truncated") {
    Bytes s(b.begin(), b.end() - 1);
    s[0] = 57;
    auto r2 = decode(s);
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().code == Errc::truncated);
  }
  SUBCASE("garbage after the selector") {
    Bytes s = b;
    s.insert(s.end(), {EMPTY_DOC, 0xee});
    s[0] = 64;
    auto r2 = decode(s);
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().code == Errc::trailing_bytes);
  }
}

TEST_CASE("OP_QUERY wrapped in $query is unwrapped") {
  Doc wrapped(
      R"({"$query": {"count": "c", "query": {}}, "$readPreference": {"mode": "secondary"}})");
  const Frame r_frame = build_op_query(3, 0, 0, "shop.$cmd", 0, -1, wrapped);
  auto r = decode(r_frame);
  REQUIRE(r.ok());
  auto v = command_view(*r);
  REQUIRE(v.ok());
  CHECK(v->name == "count");
  CHECK(v->database == "shop");
  CHECK(json(v->body) == R"({ "count" : "c", "query" : {  } })");

  Doc legacy(R"({"query": {"isMaster": 1}, "$readPreference": {"mode": "primary"}})");
  const Frame r2_frame = build_op_query(4, 0, 0, "admin.$cmd", 0, -1, legacy);
  auto r2 = decode(r2_frame);
  REQUIRE(r2.ok());
  auto v2 = command_view(*r2);
  REQUIRE(v2.ok());
  CHECK(v2->name == "isMaster");
}

TEST_CASE("OP_QUERY on a collection is not a command") {
  Doc filter(R"({"x": 1})");
  const Frame r_frame = build_op_query(5, 0, 0, "shop.orders", 10, 20, filter);
  auto r = decode(r_frame);
  REQUIRE(r.ok());
  const auto& q = std::get<OpQuery>(r->body);
  CHECK_FALSE(q.isCommand());
  CHECK(q.database() == "shop");
  CHECK(q.collection() == "orders");
  CHECK(q.numberToSkip == 10);
  auto v = command_view(*r);
  REQUIRE_FALSE(v.ok());
  CHECK(v.error().code == Errc::invalid_field);
}

TEST_CASE("OP_REPLY decodes its documents and QueryFailure") {
  const Bytes b = {
      0x35,   0,    0, 0,              // messageLength 53
      0x22,   0x01, 0, 0,              // requestID 290
      1,      0,    0, 0,              // responseTo 1
      1,      0,    0, 0,              // opCode 1 OP_REPLY
      8,      0,    0, 0,              // responseFlags: AwaitCapable
      0x39,   0x30, 0, 0, 0, 0, 0, 0,  // cursorID 12345
      0,      0,    0, 0,              // startingFrom 0
      1,      0,    0, 0,              // numberReturned 1
      OK_DOC,                          // documents[0]
  };
  auto r = decode(b);
  REQUIRE(r.ok());
  CHECK(r->header.requestId == 290);
  CHECK(r->header.responseTo == 1);
  const auto& p = std::get<OpReply>(r->body);
  CHECK(p.responseFlags == kReplyAwaitCapable);
  CHECK(p.cursorId == 12345);
  CHECK(p.startingFrom == 0);
  CHECK(p.numberReturned == 1);
  REQUIRE(p.documents.size() == 1);
  CHECK(json(p.documents[0]) == R"({ "ok" : 1.0 })");
  CHECK_FALSE(p.queryFailure());
  CHECK_FALSE(command_view(*r).ok());  // a reply is not a command

  SUBCASE("QueryFailure") {
    Doc err(R"({"$err": "boom", "code": 13})");
    const BsonView docs[] = {err};
    const Frame f_frame = build_op_reply(2, 1, kReplyQueryFailure, 0, 0, docs);
    auto f = decode(f_frame);
    REQUIRE(f.ok());
    CHECK(std::get<OpReply>(f->body).queryFailure());
  }
  SUBCASE("negative numberReturned") {
    Bytes s = b;
    s[32] = 0xff;  // numberReturned -1
    s[33] = 0xff;
    s[34] = 0xff;
    s[35] = 0xff;
    auto f = decode(s);
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().code == Errc::invalid_field);
    CHECK(f.error().offset == 32);
  }
  SUBCASE("header fields cut short") {
    Bytes s(b.begin(), b.begin() + 30);
    s[0] = 30;
    auto f = decode(s);
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().code == Errc::truncated);
    CHECK(f.error().offset == 28);  // startingFrom: 2 of 4 bytes
  }
}

TEST_CASE("OP_COMMAND and OP_COMMANDREPLY carry database and command name") {
  const Bytes cmd = {
      0x37,
      0,
      0,
      0,  // messageLength 55
      5,
      0,
      0,
      0,  // requestID 5
      0,
      0,
      0,
      0,  // responseTo 0
      0xda,
      0x07,
      0,
      0,  // opCode 2010 OP_COMMAND
      'a',
      'd',
      'm',
      'i',
      'n',
      0,  // database
      'i',
      's',
      'M',
      'a',
      's',
      't',
      'e',
      'r',
      0,              // commandName
      IS_MASTER_DOC,  // commandArgs
      EMPTY_DOC,      // metadata
  };
  auto r = decode(cmd);
  REQUIRE(r.ok());
  const auto& c = std::get<OpCommand>(r->body);
  CHECK(c.database == "admin");
  CHECK(c.commandName == "isMaster");
  CHECK(first_key(c.commandArgs) == "isMaster");
  CHECK(c.metadata.size == 5);
  CHECK(c.inputDocs.empty());
  auto v = command_view(*r);
  REQUIRE(v.ok());
  CHECK(v->name == "isMaster");
  CHECK(v->database == "admin");
  Doc args(R"({"isMaster": 1})");
  Doc meta(R"({})");
  CHECK(build_op_command(5, "admin", "isMaster", meta, args) == cmd);

  const Bytes reply = {
      0x26,      0,    0, 0,  // messageLength 38
      6,         0,    0, 0,  // requestID 6
      5,         0,    0, 0,  // responseTo 5
      0xdb,      0x07, 0, 0,  // opCode 2011 OP_COMMANDREPLY
      OK_DOC,                 // commandReply
      EMPTY_DOC,              // metadata
  };
  auto rr = decode(reply);
  REQUIRE(rr.ok());
  const auto& cr = std::get<OpCommandReply>(rr->body);
  CHECK(json(cr.commandReply) == R"({ "ok" : 1.0 })");
  CHECK(cr.metadata.size == 5);
  CHECK(cr.outputDocs.empty());
  Doc ok(R"({"ok": 1.0})");
  CHECK(build_op_command_reply(6, 5, meta, ok) == reply);
}

TEST_CASE("legacy CRUD opcodes are recognised with their namespace") {
  SUBCASE("OP_INSERT") {
    const Bytes b = {
        0x27,      0,    0,   0,       // messageLength 39
        1,         0,    0,   0,       // requestID
        0,         0,    0,   0,       // responseTo
        0xd2,      0x07, 0,   0,       // opCode 2002 OP_INSERT
        1,         0,    0,   0,       // flags: ContinueOnError
        'd',       'b',  '.', 'c', 0,  // fullCollectionName
        ID_DOC(1),                     // documents[0]
    };
    auto r = decode(b);
    REQUIRE(r.ok());
    const auto& m = std::get<OpInsert>(r->body);
    CHECK(m.flags == 1);
    CHECK(m.fullCollectionName == "db.c");
    CHECK(m.documents.size() == 1);
    Doc d(R"({"_id": 1})");
    const BsonView docs[] = {d};
    CHECK(build_op_insert(1, 1, "db.c", docs) == b);
  }
  SUBCASE("OP_UPDATE") {
    const Bytes b = {
        0x39,      0,    0,   0,       // messageLength 57
        2,         0,    0,   0,       // requestID
        0,         0,    0,   0,       // responseTo
        0xd1,      0x07, 0,   0,       // opCode 2001 OP_UPDATE
        0,         0,    0,   0,       // ZERO
        'd',       'b',  '.', 'c', 0,  // fullCollectionName
        2,         0,    0,   0,       // flags: MultiUpdate
        ID_DOC(1),                     // selector
        ID_DOC(2),                     // update
    };
    auto r = decode(b);
    REQUIRE(r.ok());
    const auto& m = std::get<OpUpdate>(r->body);
    CHECK(m.fullCollectionName == "db.c");
    CHECK(m.flags == 2);
    CHECK(json(m.selector) == R"({ "_id" : 1 })");
    CHECK(json(m.update) == R"({ "_id" : 2 })");
    Doc s(R"({"_id": 1})"), u(R"({"_id": 2})");
    CHECK(build_op_update(2, "db.c", 2, s, u) == b);
  }
  SUBCASE("OP_DELETE") {
    const Bytes b = {
        0x2b,      0,    0,   0,       // messageLength 43
        3,         0,    0,   0,       // requestID
        0,         0,    0,   0,       // responseTo
        0xd6,      0x07, 0,   0,       // opCode 2006 OP_DELETE
        0,         0,    0,   0,       // ZERO
        'd',       'b',  '.', 'c', 0,  // fullCollectionName
        1,         0,    0,   0,       // flags: SingleRemove
        ID_DOC(1),                     // selector
    };
    auto r = decode(b);
    REQUIRE(r.ok());
    const auto& m = std::get<OpDelete>(r->body);
    CHECK(m.fullCollectionName == "db.c");
    CHECK(m.flags == 1);
    Doc s(R"({"_id": 1})");
    CHECK(build_op_delete(3, "db.c", 1, s) == b);
  }
  SUBCASE("OP_GET_MORE") {
    const Bytes b = {
        0x25, 0,    0,   0,                // messageLength 37
        4,    0,    0,   0,                // requestID
        0,    0,    0,   0,                // responseTo
        0xd5, 0x07, 0,   0,                // opCode 2005 OP_GET_MORE
        0,    0,    0,   0,                // ZERO
        'd',  'b',  '.', 'c', 0,           // fullCollectionName
        10,   0,    0,   0,                // numberToReturn 10
        1,    2,    3,   4,   5, 6, 7, 8,  // cursorID 0x0807060504030201
    };
    auto r = decode(b);
    REQUIRE(r.ok());
    const auto& m = std::get<OpGetMore>(r->body);
    CHECK(m.fullCollectionName == "db.c");
    CHECK(m.numberToReturn == 10);
    CHECK(m.cursorId == 0x0807060504030201);
    CHECK(build_op_get_more(4, "db.c", 10, 0x0807060504030201) == b);
    Bytes t = b;
    t.pop_back();
    t[0] = 36;
    CHECK(decode(t).error().code == Errc::truncated);
  }
  SUBCASE("OP_KILL_CURSORS") {
    const Bytes b = {
        0x28, 0,    0, 0,              // messageLength 40
        5,    0,    0, 0,              // requestID
        0,    0,    0, 0,              // responseTo
        0xd7, 0x07, 0, 0,              // opCode 2007 OP_KILL_CURSORS
        0,    0,    0, 0,              // ZERO
        2,    0,    0, 0,              // numberOfCursorIDs 2
        1,    0,    0, 0, 0, 0, 0, 0,  // cursorIDs[0] = 1
        2,    0,    0, 0, 0, 0, 0, 0,  // cursorIDs[1] = 2
    };
    auto r = decode(b);
    REQUIRE(r.ok());
    CHECK(std::get<OpKillCursors>(r->body).cursorIds == std::vector<std::int64_t>{1, 2});
    const std::int64_t ids[] = {1, 2};
    CHECK(build_op_kill_cursors(5, ids) == b);
    Bytes lie = b;
    lie[20] = 3;  // claims 3 ids, holds 2
    auto e = decode(lie);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::invalid_field);
    CHECK(e.error().offset == 20);
  }
}

TEST_CASE("an unknown opcode is reported with its number and ids, not an error") {
  const Bytes b = {
      0x14, 0,    0,    0,     // messageLength 20
      0x2a, 0,    0,    0,     // requestID 42
      7,    0,    0,    0,     // responseTo 7
      0xdd, 0x08, 0,    0,     // opCode 2269
      0xde, 0xad, 0xbe, 0xef,  // opaque body
  };
  auto r = decode(b);
  REQUIRE(r.ok());
  CHECK(std::holds_alternative<OpUnknown>(r->body));
  CHECK(r->opCode == 2269);
  CHECK(r->header.requestId == 42);
  CHECK(r->header.responseTo == 7);
  CHECK(opcode_name(2269) == "OP_UNKNOWN");
  auto v = command_view(*r);
  REQUIRE_FALSE(v.ok());
  CHECK(v.error().code == Errc::invalid_field);
}

TEST_CASE("OP_COMPRESSED with the noop compressor wraps the original message") {
  const Bytes b = {
      0x3e,   0,    0, 0,              // messageLength 62
      0x22,   0x01, 0, 0,              // requestID 290 (the one that counts)
      1,      0,    0, 0,              // responseTo 1
      0xdc,   0x07, 0, 0,              // opCode 2012 OP_COMPRESSED
      1,      0,    0, 0,              // originalOpcode 1 OP_REPLY
      0x25,   0,    0, 0,              // uncompressedSize 37 (the OP_REPLY body without header)
      0,                               // compressorId 0 noop
      0,      0,    0, 0,              //   responseFlags
      0,      0,    0, 0, 0, 0, 0, 0,  //   cursorID 0
      0,      0,    0, 0,              //   startingFrom
      1,      0,    0, 0,              //   numberReturned 1
      OK_DOC,                          //   documents[0]
  };
  auto r = decode(b);
  REQUIRE(r.ok());
  CHECK(r->header.opCode == 2012);
  CHECK(r->opCode == 1);
  CHECK(r->compressor == Compressor::noop);
  CHECK(r->header.requestId == 290);
  CHECK(r->owned.size() == 37);
  const auto& p = std::get<OpReply>(r->body);
  REQUIRE(p.documents.size() == 1);
  CHECK(json(p.documents[0]) == R"({ "ok" : 1.0 })");

  SUBCASE("size mismatch") {
    Bytes s = b;
    s[20] = 0x26;  // uncompressedSize 38, payload holds 37
    auto e = decode(s);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::decompressed_size_mismatch);
    CHECK(e.error().offset == 25);
  }
  SUBCASE("unknown compressor") {
    Bytes s = b;
    s[24] = 9;
    auto e = decode(s);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::unknown_compressor);
    CHECK(e.error().offset == 24);
  }
  SUBCASE("nested compression") {
    Bytes s = b;
    s[16] = 0xdc;
    s[17] = 0x07;
    auto e = decode(s);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::nested_compression);
  }
  SUBCASE("negative uncompressedSize") {
    Bytes s = b;
    s[23] = 0x80;
    auto e = decode(s);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::invalid_field);
  }
  SUBCASE("error inside the decompressed payload") {
    Bytes s = b;
    s[45] = 0x30;  // the reply document claims 48 bytes, 17 are present
    auto e = decode(s);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::truncated);
    CHECK(e.error().detail.find("decompressed noop payload") != std::string::npos);
  }
}
