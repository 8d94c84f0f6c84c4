// OP_MSG: byte vectors with a comment per field, every section kind, the
// checksum, and every malformed shape the decoder must name.
#include <doctest/doctest.h>

#include "support.hpp"
#include "varanus/wire/builder.hpp"
#include "varanus/wire/command.hpp"
#include "varanus/wire/message.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;
using varanus::wire::test::json;

namespace {

// {ping: 1, $db: "admin"}: 30 bytes.
#define PING_ADMIN_DOC                                         \
  0x1e, 0, 0, 0,                   /* document length 30 */    \
      0x10, 'p', 'i', 'n', 'g', 0, /* int32 "ping" */          \
      1, 0, 0, 0,                  /*   = 1 */                 \
      0x02, '$', 'd', 'b', 0,      /* string "$db" */          \
      6, 0, 0, 0,                  /*   length 6 (with NUL) */ \
      'a', 'd', 'm', 'i', 'n', 0,  /*   = "admin" */           \
      0                            /* document terminator */

// {insert: "c", $db: "d"}: 30 bytes.
#define INSERT_DOC                                                    \
  0x1e, 0, 0, 0,                             /* document length 30 */ \
      0x02, 'i', 'n', 's', 'e', 'r', 't', 0, /* string "insert" */    \
      2, 0, 0, 0, 'c', 0,                    /*   = "c" */            \
      0x02, '$', 'd', 'b', 0,                /* string "$db" */       \
      2, 0, 0, 0, 'd', 0,                    /*   = "d" */            \
      0                                      /* terminator */

// {_id: N}: 14 bytes.
#define ID_DOC(n)                               \
  0x0e, 0, 0, 0,              /* length 14 */   \
      0x10, '_', 'i', 'd', 0, /* int32 "_id" */ \
      n, 0, 0, 0,             /*   = n */       \
      0                       /* terminator */

// Patches messageLength after a test changed the body size.
void fix_length(Bytes& b) {
  const auto n = static_cast<std::uint32_t>(b.size());
  b[0] = static_cast<std::uint8_t>(n);
  b[1] = static_cast<std::uint8_t>(n >> 8);
  b[2] = static_cast<std::uint8_t>(n >> 16);
  b[3] = static_cast<std::uint8_t>(n >> 24);
}

const Bytes kPingMsg = {
    0x33,
    0,
    0,
    0,  // messageLength 51
    7,
    0,
    0,
    0,  // requestID 7
    0,
    0,
    0,
    0,  // responseTo 0
    0xdd,
    0x07,
    0,
    0,  // opCode 2013 OP_MSG
    0,
    0,
    0,
    0,  // flagBits 0
    0,  // section kind 0: body
    PING_ADMIN_DOC,
};

const Bytes kInsertMsg = {
    0x5e,       0,         0,   0,  // messageLength 94
    9,          0,         0,   0,  // requestID 9
    0,          0,         0,   0,  // responseTo 0
    0xdd,       0x07,      0,   0,  // opCode 2013 OP_MSG
    0,          0,         0,   0,  // flagBits 0
    0,                              // section kind 0: body
    INSERT_DOC,
    1,                              // section kind 1: document sequence
    0x2a,       0,         0,   0,  // size 42 = 4 (itself) + 10 (identifier) + 2 x 14
    'd',        'o',       'c', 'u', 'm', 'e', 'n', 't', 's', 0,  // identifier "documents"
    ID_DOC(1),  ID_DOC(2),
};

}  // namespace

TEST_CASE("OP_MSG with a kind-0 body decodes field by field") {
  auto r = decode(kPingMsg);
  REQUIRE(r.ok());
  CHECK(r->header.messageLength == 51);
  CHECK(r->header.requestId == 7);
  CHECK(r->header.responseTo == 0);
  CHECK(r->opCode == 2013);
  CHECK_FALSE(r->compressor.has_value());
  const auto& m = std::get<OpMsg>(r->body);
  CHECK(m.flagBits == 0);
  CHECK(m.sectionCount == 1);
  CHECK(m.sequences.empty());
  CHECK_FALSE(m.checksum.has_value());
  CHECK(m.body.size == 30);
  CHECK(m.body.data == kPingMsg.data() + 21);
  CHECK(json(m.body) == R"({ "ping" : 1, "$db" : "admin" })");
  auto v = command_view(*r);
  REQUIRE(v.ok());
  CHECK(v->name == "ping");
  CHECK(v->database == "admin");
}

TEST_CASE("OP_MSG with a kind-1 sequence decodes the identifier and every document") {
  auto r = decode(kInsertMsg);
  REQUIRE(r.ok());
  const auto& m = std::get<OpMsg>(r->body);
  CHECK(m.sectionCount == 2);
  REQUIRE(m.sequences.size() == 1);
  CHECK(m.sequences[0].identifier == "documents");
  REQUIRE(m.sequences[0].documents.size() == 2);
  CHECK(json(m.sequences[0].documents[0]) == R"({ "_id" : 1 })");
  CHECK(json(m.sequences[0].documents[1]) == R"({ "_id" : 2 })");
  auto v = command_view(*r);
  REQUIRE(v.ok());
  CHECK(v->name == "insert");
  CHECK(v->database == "d");
  const BsonBytes merged = merged_command(*v);
  CHECK(json(BsonView{merged.data(), static_cast<std::uint32_t>(merged.size())}) ==
        R"({ "insert" : "c", "$db" : "d", "documents" : [ { "_id" : 1 }, { "_id" : 2 } ] })");
}

TEST_CASE("OP_MSG sections come in any order") {
  const Bytes seq_first = {
      0x5e,       0,         0,   0,                                // messageLength 94
      9,          0,         0,   0,                                // requestID 9
      0,          0,         0,   0,                                // responseTo 0
      0xdd,       0x07,      0,   0,                                // opCode 2013 OP_MSG
      0,          0,         0,   0,                                // flagBits 0
      1,                                                            // section kind 1 first
      0x2a,       0,         0,   0,                                // size 42
      'd',        'o',       'c', 'u', 'm', 'e', 'n', 't', 's', 0,  // identifier
      ID_DOC(1),  ID_DOC(2),
      0,  // then kind 0
      INSERT_DOC,
  };
  auto r = decode(seq_first);
  REQUIRE(r.ok());
  const auto& m = std::get<OpMsg>(r->body);
  CHECK(m.sectionCount == 2);
  CHECK(first_key(m.body) == "insert");
  CHECK(m.sequences.at(0).documents.size() == 2);
}

TEST_CASE("OP_MSG kind-2 sections are accepted and skipped") {
  Bytes b = {
      0,
      0,
      0,
      0,  // messageLength (patched)
      1,
      0,
      0,
      0,  // requestID 1
      0,
      0,
      0,
      0,  // responseTo 0
      0xdd,
      0x07,
      0,
      0,  // opCode 2013
      0,
      0,
      0,
      0,  // flagBits 0
      2,  // section kind 2
      8,
      0,
      0,
      0,  // size 8 (counts itself)
      0xaa,
      0xbb,
      0xcc,
      0xdd,  // opaque payload
      0,     // section kind 0
      PING_ADMIN_DOC,
  };
  fix_length(b);
  auto r = decode(b);
  REQUIRE(r.ok());
  CHECK(std::get<OpMsg>(r->body).sectionCount == 2);
  CHECK(first_key(std::get<OpMsg>(r->body).body) == "ping");
}

TEST_CASE("OP_MSG flag bits are reported") {
  Bytes b = kPingMsg;
  SUBCASE("moreToCome and exhaustAllowed") {
    b[16] = 0x02;  // moreToCome
    b[18] = 0x01;  // bit 16: exhaustAllowed
    auto r = decode(b);
    REQUIRE(r.ok());
    const auto& m = std::get<OpMsg>(r->body);
    CHECK(m.moreToCome());
    CHECK(m.exhaustAllowed());
    CHECK(m.unknownRequiredBits == 0);
    auto v = command_view(*r);
    REQUIRE(v.ok());
    CHECK(v->moreToCome);
    CHECK(v->exhaustAllowed);
    CHECK(v->flagBits == 0x10002u);
  }
  SUBCASE("unknown required bits are reported, not rejected") {
    b[16] = 0x20;  // bit 5
    b[17] = 0x80;  // bit 15
    b[19] = 0x80;  // bit 31: optional, not reported
    auto r = decode(b);
    REQUIRE(r.ok());
    CHECK(std::get<OpMsg>(r->body).unknownRequiredBits == 0x8020u);
  }
}

TEST_CASE("OP_MSG checksum is verified") {
  // Same ping with checksumPresent and the CRC-32C over everything before it.
  Bytes b = kPingMsg;
  b[16] = 0x01;  // flagBits: checksumPresent
  b.insert(b.end(), {0, 0, 0, 0});
  fix_length(b);
  const std::uint32_t crc = crc32c({b.data(), b.size() - 4});
  b[b.size() - 4] = static_cast<std::uint8_t>(crc);
  b[b.size() - 3] = static_cast<std::uint8_t>(crc >> 8);
  b[b.size() - 2] = static_cast<std::uint8_t>(crc >> 16);
  b[b.size() - 1] = static_cast<std::uint8_t>(crc >> 24);
  SUBCASE("good checksum") {
    auto r = decode(b);
    REQUIRE(r.ok());
    CHECK(std::get<OpMsg>(r->body).checksum == crc);
    CHECK(std::get<OpMsg>(r->body).checksumPresent());
    CHECK(b == build_op_msg(7, 0, 0, BsonView{b.data() + 21, 30}, {}, true));
  }
  SUBCASE("bad checksum") {
    b[32] ^= 0x01;  // flip a bit of the ping value
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::bad_checksum);
    CHECK(r.error().offset == b.size() - 4);
    DecodeOptions no_verify;
    no_verify.verifyChecksum = false;
    CHECK(decode(b, no_verify).ok());
  }
  SUBCASE("checksumPresent without room for it") {
    Bytes t = {0x15, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xdd, 7, 0, 0,  // header, length 21
               1,    0, 0, 0,                                         // flagBits: checksumPresent
               0};                                                    // one byte where 4 are needed
    auto r = decode(t);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::truncated);
  }
}

TEST_CASE("CRC-32C matches the Castagnoli check value") {
  const std::string s = "123456789";
  const auto* p = reinterpret_cast<const std::uint8_t*>(s.data());
  CHECK(crc32c({p, s.size()}) == 0xE3069283u);
  // Chaining: crc(a + b) == crc(b, crc(a)).
  CHECK(crc32c({p + 4, 5}, crc32c({p, 4})) == 0xE3069283u);
  CHECK(crc32c({}) == 0u);
}

TEST_CASE("malformed OP_MSG is rejected with the cause and offset") {
  SUBCASE("truncated flagBits") {
    Bytes b = {0x13, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xdd, 7, 0, 0,  // header, length 19
               0,    0, 0};                                           // 3 of 4 flag bytes
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::truncated);
    CHECK(r.error().offset == 16);
  }
  SUBCASE("kind-0 body overrunning the message") {
    Bytes b = kPingMsg;
    b[21] = 40;  // document claims 40 bytes, 30 remain
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::section_overrun);
    CHECK(r.error().offset == 21);
  }
  SUBCASE("kind-1 size past the end") {
    Bytes b = kInsertMsg;
    b[52] = 0x2b;  // size 43: one byte more than the message holds
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::section_overrun);
    CHECK(r.error().offset == 52);
  }
  SUBCASE("kind-1 size field itself cut off") {
    Bytes b = kPingMsg;
    b.insert(b.end(), {1, 0x10, 0});  // kind 1 with only 2 size bytes
    fix_length(b);
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::section_overrun);
  }
  SUBCASE("kind-1 size smaller than its own field") {
    Bytes b = kInsertMsg;
    b[52] = 3;
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::section_overrun);
  }
  SUBCASE("kind-1 documents that do not fill the section exactly") {
    Bytes b = kInsertMsg;
    b[52] = 0x29;  // size 41: the last document now overruns the section by one byte
    b.push_back(0);
    fix_length(b);
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::section_overrun);
  }
  SUBCASE("kind-1 identifier without NUL") {
    Bytes b = {0,    0,
               0,    0,
               1,    0,
               0,    0,
               0,    0,
               0,    0,
               0xdd, 7,
               0,    0,  // header
               0,    0,
               0,    0,               // flagBits
               0,    PING_ADMIN_DOC,  // kind 0
               1,    7,
               0,    0,
               0,    'a',
               'b',  'c'};  // kind 1, size 7, "abc" no NUL
    fix_length(b);
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_cstring);
  }
  SUBCASE("invalid BSON inside the body") {
    Bytes b = kPingMsg;
    b[25] = 0x7f - 1;  // element type 0x7e: no such BSON type
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_bson);
    CHECK(r.error().offset == 21);
    DecodeOptions fast;
    fast.validateBson = false;  // only the length prefix and terminator are checked
    CHECK(decode(b, fast).ok());
  }
  SUBCASE("BSON without its terminator") {
    Bytes b = kPingMsg;
    b.back() = 1;
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_bson);
  }
  SUBCASE("BSON length below 5") {
    Bytes b = kPingMsg;
    b[21] = 4;
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_bson);
  }
  SUBCASE("unknown section kind") {
    Bytes b = kPingMsg;
    b[20] = 7;
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unknown_section_kind);
    CHECK(r.error().offset == 20);
    CHECK(r.error().message() == "unknown_section_kind at offset 20: section kind 7");
  }
  SUBCASE("two kind-0 sections") {
    Bytes b = kPingMsg;
    b.push_back(0);
    b.insert(b.end(), kPingMsg.begin() + 21, kPingMsg.end());
    fix_length(b);
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::duplicate_body);
    CHECK(r.error().offset == 51);
  }
  SUBCASE("no kind-0 section") {
    Bytes b(kInsertMsg.begin(), kInsertMsg.begin() + 20);          // header + flags
    b.insert(b.end(), kInsertMsg.begin() + 51, kInsertMsg.end());  // the kind-1 only
    fix_length(b);
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::missing_body);
  }
  SUBCASE("no sections at all") {
    Bytes b(kPingMsg.begin(), kPingMsg.begin() + 20);
    fix_length(b);
    auto r = decode(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::missing_body);
  }
}

TEST_CASE("nesting deeper than the bound is invalid BSON, not a stack overflow") {
  // {a: {a: {a: ... {}}}} 301 levels deep, wrapped from the inside out.
  Bytes inner = {5, 0, 0, 0, 0};
  for (int i = 0; i < 301; ++i) {
    const auto n = static_cast<std::uint32_t>(inner.size() + 4 + 3 + 1);
    Bytes outer = {static_cast<std::uint8_t>(n),
                   static_cast<std::uint8_t>(n >> 8),
                   static_cast<std::uint8_t>(n >> 16),
                   static_cast<std::uint8_t>(n >> 24),
                   0x03,
                   'a',
                   0};  // length, embedded document "a"
    outer.insert(outer.end(), inner.begin(), inner.end());
    outer.push_back(0);  // terminator
    inner.swap(outer);
  }
  const BsonView deep{inner.data(), static_cast<std::uint32_t>(inner.size())};
  CHECK_FALSE(validate_bson(deep));
  const Frame r_frame = build_op_msg(1, 0, 0, deep);
  auto r = decode(r_frame);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::invalid_bson);
}
