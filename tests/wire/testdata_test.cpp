// Recorded traffic from real servers and drivers (tests/data, see
// its README for provenance): single frames from FerretDB's testdata and
// whole conversations from packetbeat's pcaps.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <set>

#include "pcap.hpp"
#include "support.hpp"
#include "varanus/wire/command.hpp"
#include "varanus/wire/frame.hpp"

using namespace varanus::wire;
using varanus::wire::test::Bytes;
using varanus::wire::test::json;
using varanus::wire::test::read_file;
using varanus::wire::test::testdata;

namespace {

struct Seen {
  std::int32_t opCode = 0;
  std::int32_t requestId = 0;
  std::int32_t responseTo = 0;
  std::string command;  // command name when a command view exists
  std::string database;
  std::size_t docs = 0;  // OP_REPLY documents / OP_MSG sections
};

Seen summarize(const Message& m) {
  Seen s{m.opCode, m.header.requestId, m.header.responseTo, {}, {}, 0};
  if (auto v = command_view(m)) {
    s.command = std::string(v->name);
    s.database = std::string(v->database);
  }
  if (const auto* r = std::get_if<OpReply>(&m.body)) s.docs = r->documents.size();
  if (const auto* q = std::get_if<OpMsg>(&m.body)) s.docs = q->sectionCount;
  return s;
}

// A capture that starts mid-stream: skip to the first offset where a frame
// with a known opcode decodes.
std::size_t resync(std::span<const std::uint8_t> b) {
  for (std::size_t at = 0; at + 16 <= b.size(); ++at) {
    const auto rest = b.subspan(at);
    const auto c = check_frame(rest);
    if (c.status != FrameStatus::frame) continue;
    auto h = read_header(rest);
    if (!h || opcode_name(h->opCode) == "OP_UNKNOWN") continue;
    if (decode(rest.first(c.length)).ok()) return at;
  }
  return b.size();
}

struct StreamResult {
  std::vector<Seen> messages;
  std::size_t skipped = 0;   // bytes before the first frame (mid-stream start)
  std::size_t leftover = 0;  // bytes of an incomplete last frame
};

StreamResult decode_stream(const test::TcpStream& st) {
  StreamResult r;
  std::span<const std::uint8_t> bytes = st.bytes;
  if (!st.sawSyn) {
    r.skipped = resync(bytes);
    bytes = bytes.subspan(r.skipped);
  }
  FrameReader reader;
  reader.feed(bytes);
  for (;;) {
    auto n = reader.next();
    if (n.status == FrameStatus::need_more) break;
    REQUIRE_MESSAGE(n.status == FrameStatus::frame,
                    st.name() << ": " << (n.error ? n.error->message() : ""));
    auto m = decode(n.frame);
    REQUIRE_MESSAGE(m.ok(), st.name() << " frame at " << reader.consumed() - n.frame.size() << ": "
                                      << m.error().message());
    r.messages.push_back(summarize(*m));
  }
  r.leftover = reader.buffered();
  return r;
}

std::vector<std::pair<test::TcpStream, StreamResult>> decode_pcap(const std::string& name) {
  const Bytes file = read_file(testdata("pcap/" + name));
  REQUIRE_MESSAGE(!file.empty(), "missing " << testdata("pcap/" + name));
  auto segs = test::read_pcap_tcp(file);
  REQUIRE(segs.has_value());
  std::vector<std::pair<test::TcpStream, StreamResult>> out;
  for (auto& st : test::reassemble(*segs)) {
    if (st.bytes.empty()) continue;
    auto r = decode_stream(st);
    out.emplace_back(std::move(st), std::move(r));
  }
  return out;
}

std::map<std::string, int> command_counts(
    const std::vector<std::pair<test::TcpStream, StreamResult>>& streams) {
  std::map<std::string, int> n;
  for (const auto& [st, r] : streams)
    for (const auto& m : r.messages)
      if (!m.command.empty()) ++n[m.command];
  return n;
}

}  // namespace

TEST_CASE("dump pcaps" * doctest::skip()) {
  for (const auto& e : std::filesystem::directory_iterator(testdata("pcap"))) {
    const auto name = e.path().filename().string();
    MESSAGE("== " << name);
    for (const auto& [st, r] : decode_pcap(name)) {
      MESSAGE(st.name() << " syn=" << st.sawSyn << " gap=" << st.gap << " bytes=" << st.bytes.size()
                        << " skipped=" << r.skipped << " leftover=" << r.leftover);
      for (const auto& m : r.messages)
        MESSAGE("  " << opcode_name(m.opCode) << " " << m.opCode << " id=" << m.requestId
                     << " to=" << m.responseTo << " cmd=" << m.command << " db=" << m.database
                     << " docs=" << m.docs);
    }
  }
}

// ------------------------------------------------------------ wire/*.bin

namespace {

struct WireCase {
  const char* file;
  std::int32_t opCode;
  std::int32_t requestId;
  std::int32_t responseTo;
  const char* command;  // first key for OP_MSG; "" for OP_REPLY
  const char* database;
  std::size_t sections;  // OP_MSG sections / OP_REPLY documents
};

const WireCase kWire[] = {
    {"handshake1.bin", 2004, 1, 0, "ismaster", "admin", 0},
    {"handshake2.bin", 1, 290, 1, "", "", 1},
    {"handshake3.bin", 2004, 2, 0, "ismaster", "admin", 0},
    {"handshake4.bin", 1, 291, 2, "", "", 1},
    {"handshake5.bin", 2013, 3, 0, "buildInfo", "admin", 1},
    {"handshake6.bin", 2013, 292, 3, "version", "", 1},  // a reply: first key, no $db
    {"import.bin", 2013, 7, 0, "insert", "monila", 2},
    {"dollar_dot.bin", 2013, 35, 0, "insert", "test", 1},
    {"multi_section_insert.bin", 2013, 15, 0, "insert", "test", 2},
    {"multi_section_update.bin", 2013, 11, 0, "update", "test", 2},
};

}  // namespace

TEST_CASE("every recorded wire message decodes with its command and database") {
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(testdata("wire"))) {
    if (e.path().extension() == ".bin") ++files;
  }
  CHECK(files == std::size(kWire));  // a new file needs its expectations here
  for (const WireCase& w : kWire) {
    CAPTURE(w.file);
    const Bytes b = read_file(testdata(std::string("wire/") + w.file));
    REQUIRE(!b.empty());
    auto m = decode(b);
    REQUIRE_MESSAGE(m.ok(), m.error().message());
    CHECK(m->opCode == w.opCode);
    CHECK(m->header.messageLength == static_cast<std::int32_t>(b.size()));
    CHECK(m->header.requestId == w.requestId);
    CHECK(m->header.responseTo == w.responseTo);
    const Seen s = summarize(*m);
    CHECK(s.command == w.command);
    CHECK(s.database == w.database);
    CHECK(s.docs == w.sections);
    if (w.opCode == 2013) {
      const auto& msg = std::get<OpMsg>(m->body);
      CHECK(msg.unknownRequiredBits == 0);
    }
    // The frame reader agrees, whatever the split.
    for (std::size_t cut = 0; cut <= b.size(); cut += 13) {
      FrameReader r;
      r.feed({b.data(), cut});
      r.feed({b.data() + cut, b.size() - cut});
      auto n = r.next();
      REQUIRE(n.status == FrameStatus::frame);
      CHECK(n.frame.size() == b.size());
    }
  }
}

TEST_CASE("recorded handshake replies carry the server's limits") {
  const Bytes b = read_file(testdata("wire/handshake2.bin"));
  auto m = decode(b);
  REQUIRE(m.ok());
  const auto& r = std::get<OpReply>(m->body);
  CHECK(r.numberReturned == 1);
  CHECK(r.cursorId == 0);
  const std::string j = json(r.documents.at(0));
  CHECK(j.find("\"maxBsonObjectSize\" : 16777216") != std::string::npos);
  CHECK(j.find("topologyVersion") != std::string::npos);
}

TEST_CASE("recorded kind-1 sequences come before the body and keep their checksum") {
  for (const char* f : {"multi_section_insert.bin", "multi_section_update.bin"}) {
    CAPTURE(f);
    const Bytes b = read_file(testdata(std::string("wire/") + f));
    auto m = decode(b);
    REQUIRE_MESSAGE(m.ok(), m.error().message());
    const auto& msg = std::get<OpMsg>(m->body);
    CHECK(msg.checksumPresent());
    REQUIRE(msg.checksum.has_value());
    // The recorded checksum is the CRC-32C of everything before it.
    CHECK(*msg.checksum == crc32c({b.data(), b.size() - 4}));
    CHECK(b[20] == 1);  // the first section is the kind-1 sequence
    REQUIRE(msg.sequences.size() == 1);
    CHECK(msg.sequences[0].identifier ==
          (std::string(f) == "multi_section_insert.bin" ? "documents" : "updates"));
    CHECK(msg.sequences[0].documents.size() == 1);
    Bytes bad = b;
    bad[bad.size() - 1] ^= 0x10;
    CHECK(decode(bad).error().code == Errc::bad_checksum);
  }
}

TEST_CASE("recorded insert merges its documents sequence") {
  const Bytes b = read_file(testdata("wire/import.bin"));
  auto m = decode(b);
  REQUIRE(m.ok());
  auto v = command_view(*m);
  REQUIRE(v.ok());
  REQUIRE(v->sequences != nullptr);
  REQUIRE(v->sequences->size() == 1);
  CHECK(v->sequences->at(0).identifier == "documents");
  const std::size_t n = v->sequences->at(0).documents.size();
  CHECK(n > 0);
  const BsonBytes merged = merged_command(*v);
  bson_t doc;
  REQUIRE(BsonView{merged.data(), static_cast<std::uint32_t>(merged.size())}.init_static(&doc));
  bson_iter_t it;
  REQUIRE(bson_iter_init_find(&it, &doc, "documents"));
  REQUIRE(BSON_ITER_HOLDS_ARRAY(&it));
  bson_iter_t arr;
  REQUIRE(bson_iter_recurse(&it, &arr));
  std::size_t count = 0;
  while (bson_iter_next(&arr)) ++count;
  CHECK(count == n);
}

TEST_CASE("recorded field names with $ and . survive decoding") {
  const Bytes b = read_file(testdata("wire/dollar_dot.bin"));
  auto m = decode(b);
  REQUIRE(m.ok());
  const auto& msg = std::get<OpMsg>(m->body);
  const std::string j = json(msg.body);
  CHECK(j.find("$") != std::string::npos);
}

// ------------------------------------------------------------ pcap/*.pcap

TEST_CASE("every complete frame of every recorded TCP stream decodes") {
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(testdata("pcap"))) {
    const auto name = e.path().filename().string();
    if (e.path().extension() != ".pcap") continue;
    ++files;
    CAPTURE(name);
    const auto streams = decode_pcap(name);  // REQUIREs every frame decodes
    CHECK_FALSE(streams.empty());
    for (const auto& [st, r] : streams) {
      CAPTURE(st.name());
      CHECK_FALSE(st.gap);
      CHECK_FALSE(r.messages.empty());
      CHECK(r.leftover == 0);  // the captures end between frames
    }
  }
  CHECK(files == 10);
}

TEST_CASE("the 3.0 shell session holds the commands its README lists") {
  const auto streams = decode_pcap("mongo_3.0_session.pcap");
  const auto n = command_counts(streams);
  CHECK(n.at("isMaster") == 11);
  CHECK(n.at("listCollections") == 5);
  CHECK(n.at("insert") == 2);
  CHECK(n.at("update") == 1);
  CHECK(n.at("delete") == 1);
  CHECK(n.at("findandmodify") == 1);
  // Legacy finds are OP_QUERY on a collection: no command view.
  std::size_t finds = 0;
  for (const auto& [st, r] : streams)
    for (const auto& m : r.messages)
      if (m.opCode == 2004 && m.command.empty()) ++finds;
  CHECK(finds == 3);
  // Every reply answers a request of the same session.
  std::set<std::int32_t> asked;
  for (const auto& m : streams.at(0).second.messages) asked.insert(m.requestId);
  for (const auto& m : streams.at(1).second.messages) CHECK(asked.count(m.responseTo) == 1);
}

TEST_CASE("one 101-document reply split over many segments reassembles") {
  const auto streams = decode_pcap("mongodb_more_rows.pcap");
  REQUIRE(streams.size() == 2);
  const auto& reply = streams.at(1).second.messages;
  REQUIRE(reply.size() == 1);
  CHECK(reply[0].opCode == 1);
  CHECK(reply[0].docs == 101);
  CHECK(reply[0].responseTo == streams.at(0).second.messages.at(0).requestId);
}

TEST_CASE("a capture that starts mid-conversation still decodes") {
  // The first reply answers a request that is not in the capture.
  const auto streams = decode_pcap("mongodb_reply_request_reply.pcap");
  REQUIRE(streams.size() == 2);
  const auto& server = streams.at(0);
  CHECK(server.first.srcPort == 27017);
  CHECK_FALSE(server.first.sawSyn);
  REQUIRE(server.second.messages.size() == 2);
  CHECK(server.second.messages[0].responseTo == 32929);  // unseen request
  const auto& client = streams.at(1).second.messages;
  REQUIRE(client.size() == 1);
  CHECK(client[0].command == "buildinfo");
  CHECK(client[0].database == "admin");
  CHECK(server.second.messages[1].responseTo == client[0].requestId);
}

TEST_CASE("bogus opcode 2269 is reported as unknown on each connection") {
  const auto streams = decode_pcap("mongodb_invalid_opcode_2269.pcap");
  REQUIRE(streams.size() == 3);
  for (const auto& [st, r] : streams) {
    CHECK(st.sawSyn);
    REQUIRE(r.messages.size() == 1);
    CHECK(r.messages[0].opCode == 2269);
    CHECK(r.messages[0].command.empty());
  }
}

TEST_CASE("duplicate-key inserts through mongod and mongos decode") {
  const auto streams = decode_pcap("mongodb_insert_duplicate_key.pcap");
  const auto n = command_counts(streams);
  CHECK(n.at("insert") == 2);
  CHECK(n.at("replSetGetStatus") == 1);
  std::set<std::uint16_t> ports;
  for (const auto& [st, r] : streams) ports.insert(st.dstPort);
  CHECK(ports.count(27017) == 1);
  CHECK(ports.count(27018) == 1);
}
