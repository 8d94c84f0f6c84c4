// capture: link-layer parsing, TCP reassembly and the Replayer, with
// packets and pcap/pcapng files written by the tests themselves; then the
// recorded captures of the test data (VARANUS_TESTDATA_DIR/pcap).
#include <bson/bson.h>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "varanus/capture/packet.hpp"
#include "varanus/capture/pcap_source.hpp"
#include "varanus/capture/replayer.hpp"
#include "varanus/capture/stream.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus;
using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;

namespace {

// ---------------------------------------------------------------- packets --

void put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& b, std::uint32_t v) {
  put16(b, static_cast<std::uint16_t>(v >> 16));
  put16(b, static_cast<std::uint16_t>(v));
}
void le16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v));
  b.push_back(static_cast<std::uint8_t>(v >> 8));
}
void le32(Bytes& b, std::uint32_t v) {
  le16(b, static_cast<std::uint16_t>(v));
  le16(b, static_cast<std::uint16_t>(v >> 16));
}
void append(Bytes& b, const Bytes& more) {
  b.insert(b.end(), more.begin(), more.end());
}

struct Tcp {
  std::uint16_t sport, dport;
  std::uint32_t seq, ack;
  std::uint8_t flags;
  Bytes payload;
};

Bytes tcp_bytes(const Tcp& t) {
  Bytes b;
  put16(b, t.sport);
  put16(b, t.dport);
  put32(b, t.seq);
  put32(b, t.ack);
  b.push_back(0x50);  // 20-byte header
  b.push_back(t.flags);
  put16(b, 65535);
  put32(b, 0);  // checksum, urgent pointer (not checked)
  append(b, t.payload);
  return b;
}

/// IPv4 (client 10.0.0.1, server 10.0.0.2) or IPv6 (fd00::1, fd00::2).
Bytes ip_packet(const Tcp& t, bool v6, bool fromClient) {
  const Bytes seg = tcp_bytes(t);
  Bytes b;
  if (!v6) {
    b = {0x45, 0};
    put16(b, static_cast<std::uint16_t>(20 + seg.size()));
    put32(b, 0x00004000);  // id 0, DF
    b.push_back(64);
    b.push_back(6);
    put16(b, 0);
    const Bytes a = {10, 0, 0, 1}, s = {10, 0, 0, 2};
    append(b, fromClient ? a : s);
    append(b, fromClient ? s : a);
  } else {
    b = {0x60, 0, 0, 0};
    put16(b, static_cast<std::uint16_t>(seg.size()));
    b.push_back(6);
    b.push_back(64);
    Bytes a(16, 0), s(16, 0);
    a[0] = s[0] = 0xfd;
    a[15] = 1;
    s[15] = 2;
    append(b, fromClient ? a : s);
    append(b, fromClient ? s : a);
  }
  append(b, seg);
  return b;
}

/// The link-layer frame of an IP packet.
Bytes link_frame(int link, const Bytes& ip, bool v6, bool vlan = false) {
  Bytes b;
  const std::uint16_t ethertype = v6 ? 0x86DD : 0x0800;
  switch (link) {
    case capture::kLinkEthernet:
      b.assign(12, 0xAA);
      if (vlan) {
        put16(b, 0x8100);
        put16(b, 42);
      }
      put16(b, ethertype);
      break;
    case capture::kLinkLinuxSll:
      b.assign(14, 0);
      put16(b, ethertype);
      break;
    case capture::kLinkLinuxSll2:
      put16(b, ethertype);
      b.resize(20, 0);
      break;
    case capture::kLinkNull:
      le32(b, v6 ? 10 : 2);
      break;
    case capture::kLinkLoop:
      put32(b, v6 ? 24 : 2);
      break;
    default:  // raw
      break;
  }
  append(b, ip);
  if (link == capture::kLinkEthernet && ip.size() < 46) b.resize(b.size() + 46 - ip.size(), 0);
  return b;
}

// ------------------------------------------------------------ pcap files --

struct Packet {
  std::chrono::microseconds t;
  Bytes data;
};

void write_pcap(const std::string& path, int link, const std::vector<Packet>& ps) {
  Bytes b;
  le32(b, 0xa1b2c3d4);
  le16(b, 2);
  le16(b, 4);
  le32(b, 0);
  le32(b, 0);
  le32(b, 262144);
  le32(b, static_cast<std::uint32_t>(link));
  for (const auto& p : ps) {
    le32(b, static_cast<std::uint32_t>(p.t.count() / 1'000'000));
    le32(b, static_cast<std::uint32_t>(p.t.count() % 1'000'000));
    le32(b, static_cast<std::uint32_t>(p.data.size()));
    le32(b, static_cast<std::uint32_t>(p.data.size()));
    append(b, p.data);
  }
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void block(Bytes& out, std::uint32_t type, const Bytes& body) {
  Bytes padded = body;
  while (padded.size() % 4) padded.push_back(0);
  const auto len = static_cast<std::uint32_t>(12 + padded.size());
  le32(out, type);
  le32(out, len);
  append(out, padded);
  le32(out, len);
}

void write_pcapng(const std::string& path, int link, const std::vector<Packet>& ps) {
  Bytes out, shb, idb;
  le32(shb, 0x1A2B3C4D);
  le16(shb, 1);
  le16(shb, 0);
  le32(shb, 0xFFFFFFFF);
  le32(shb, 0xFFFFFFFF);  // section length unknown
  block(out, 0x0A0D0D0A, shb);
  le16(idb, static_cast<std::uint16_t>(link));
  le16(idb, 0);
  le32(idb, 262144);  // default resolution: microseconds
  block(out, 1, idb);
  for (const auto& p : ps) {
    Bytes epb;
    const auto t = static_cast<std::uint64_t>(p.t.count());
    le32(epb, 0);
    le32(epb, static_cast<std::uint32_t>(t >> 32));
    le32(epb, static_cast<std::uint32_t>(t));
    le32(epb, static_cast<std::uint32_t>(p.data.size()));
    le32(epb, static_cast<std::uint32_t>(p.data.size()));
    append(epb, p.data);
    block(out, 6, epb);
  }
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
}

// ------------------------------------------------------------ MongoDB ------

struct Doc {
  bson_t* b;
  explicit Doc(const char* json) {
    bson_error_t err;
    b = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json), -1, &err);
    REQUIRE_MESSAGE(b != nullptr, err.message);
  }
  ~Doc() { bson_destroy(b); }
  Doc(const Doc&) = delete;
  wire::BsonView view() const { return wire::BsonView::of(b); }
};

Bytes ping(std::int32_t id) {
  const Doc d(R"({"ping": 1, "$db": "admin"})");
  return wire::build_op_msg(id, 0, 0, d.view());
}
Bytes find_cmd(std::int32_t id) {
  const Doc d(R"({"find": "things", "filter": {"x": {"$gt": 1}}, "$db": "shop"})");
  return wire::build_op_msg(id, 0, 0, d.view());
}
Bytes ok_reply(std::int32_t id, std::int32_t to, std::size_t padding = 0) {
  std::string json = R"({"ok": 1.0, "pad": ")" + std::string(padding, 'p') + R"("})";
  const Doc d(json.c_str());
  return wire::build_op_msg(id, to, 0, d.view());
}

struct Recorder : monitor::EventOutput {
  std::vector<monitor::Event> events;
  void publish(monitor::Event&& e) override { events.push_back(std::move(e)); }
  std::size_t count(monitor::EventType t, const std::string& name = "") const {
    std::size_t n = 0;
    for (const auto& e : events)
      if (e.type == t && (name.empty() || e.commandName == name)) ++n;
    return n;
  }
  std::size_t started(const std::string& name = "") const {
    return count(monitor::EventType::commandStarted, name);
  }
  std::size_t succeeded(const std::string& name = "") const {
    return count(monitor::EventType::commandSucceeded, name);
  }
  std::size_t failed(const std::string& name = "") const {
    return count(monitor::EventType::commandFailed, name);
  }
  /// "started ping 1" ... one string per event, without times and connection numbers.
  std::vector<std::string> shape() const {
    std::vector<std::string> v;
    for (const auto& e : events) {
      std::string s(monitor::to_string(e.type));
      if (e.isCommand()) s += " " + e.commandName + " " + std::to_string(e.requestId);
      if (!e.message.empty()) s += " (" + e.message + ")";
      v.push_back(s);
    }
    return v;
  }
};

/// A TCP conversation: client port 40000 -> server 27017, as segments.
struct Conversation {
  std::uint32_t cseq = 1000, sseq = 5000;
  std::vector<std::pair<bool, Tcp>> segs;  // (fromClient, segment)

  void handshake() {
    segs.push_back({true, Tcp{40000, 27017, cseq++, 0, capture::tcp_flags::syn, {}}});
    segs.push_back({false, Tcp{27017, 40000, sseq++, cseq, 0x12, {}}});
    segs.push_back({true, Tcp{40000, 27017, cseq, sseq, capture::tcp_flags::ack, {}}});
  }
  /// `bytes` from one side, cut into segments of at most `mss`.
  void send(bool fromClient, const Bytes& bytes, std::size_t mss = 1000) {
    for (std::size_t i = 0; i < bytes.size(); i += mss) {
      Bytes part(bytes.begin() + static_cast<std::ptrdiff_t>(i),
                 bytes.begin() + static_cast<std::ptrdiff_t>(std::min(bytes.size(), i + mss)));
      const auto n = static_cast<std::uint32_t>(part.size());
      if (fromClient) {
        segs.push_back({true, Tcp{40000, 27017, cseq, sseq, 0x18, std::move(part)}});
        cseq += n;
      } else {
        segs.push_back({false, Tcp{27017, 40000, sseq, cseq, 0x18, std::move(part)}});
        sseq += n;
      }
    }
  }
  void ack(bool fromClient) {
    segs.push_back({fromClient, fromClient ? Tcp{40000, 27017, cseq, sseq, 0x10, {}}
                                           : Tcp{27017, 40000, sseq, cseq, 0x10, {}}});
  }
  void close() {
    segs.push_back({true, Tcp{40000, 27017, cseq++, sseq, 0x11, {}}});
    segs.push_back({false, Tcp{27017, 40000, sseq++, cseq, 0x11, {}}});
    segs.push_back({true, Tcp{40000, 27017, cseq, sseq, 0x10, {}}});
  }
  /// Three pings and a find, each with its reply; a large (3-segment) reply.
  static Conversation standard() {
    Conversation c;
    c.handshake();
    for (int i = 1; i <= 3; ++i) {
      c.send(true, ping(i));
      c.send(false, ok_reply(100 + i, i));
      c.ack(true);
    }
    c.send(true, find_cmd(4));
    c.send(false, ok_reply(104, 4, 2500));
    c.ack(true);
    c.close();
    return c;
  }
  std::vector<Packet> packets(int link, bool v6, bool vlan = false) const {
    std::vector<Packet> v;
    std::chrono::microseconds t = 1'700'000'000'000'000us;
    for (const auto& [fromClient, seg] : segs) {
      v.push_back({t, link_frame(link, ip_packet(seg, v6, fromClient), v6, vlan)});
      t += 100us;
    }
    return v;
  }
};

Recorder replay_packets(const std::vector<Packet>& ps, int link,
                        capture::ReplayCounters* counters = nullptr) {
  Recorder r;
  capture::Replayer rp(r, {});
  for (const auto& p : ps) rp.packet(link, p.t, p.data, static_cast<std::uint32_t>(p.data.size()));
  rp.finish();
  if (counters) *counters = rp.counters();
  return r;
}

Recorder replay_file(const std::string& path, std::vector<std::uint16_t> ports = {27017},
                     capture::ReplayCounters* counters = nullptr,
                     std::vector<std::string>* notes = nullptr) {
  Recorder r;
  capture::ReplayOptions o;
  o.ports = std::move(ports);
  o.diagnostics = [notes](std::string_view l) {
    if (notes) notes->emplace_back(l);
  };
  capture::Replayer rp(r, o);
  capture::PcapSource src = capture::PcapSource::open_file(path);
  const int link = src.link_type();
  src.loop([&](const capture::PacketView& p) { rp.packet(link, p.time, p.data, p.wireLength); });
  rp.finish();
  if (counters) *counters = rp.counters();
  return r;
}

void check_standard(const Recorder& r) {
  CHECK(r.count(monitor::EventType::connectionOpened) == 1);
  CHECK(r.count(monitor::EventType::connectionClosed) == 1);
  CHECK(r.started("ping") == 3);
  CHECK(r.succeeded("ping") == 3);
  CHECK(r.started("find") == 1);
  CHECK(r.succeeded("find") == 1);
  CHECK(r.failed() == 0);
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("varanus-capture-test-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

// Stream::Output that records what it is given.
struct Collect : capture::Stream::Output {
  Bytes bytes;
  std::vector<std::uint64_t> gaps;
  void data(std::span<const std::uint8_t> b) override {
    bytes.insert(bytes.end(), b.begin(), b.end());
  }
  void gap(std::uint64_t n) override { gaps.push_back(n); }
};

Bytes seq_bytes(std::size_t n) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(i * 7 + 3);
  return b;
}
std::span<const std::uint8_t> part(const Bytes& b, std::size_t from, std::size_t n) {
  return std::span<const std::uint8_t>(b).subspan(from, n);
}

}  // namespace

// ================================================================ parsing ==

TEST_CASE("every link type, IPv4 and IPv6, gives the TCP segment inside") {
  const Tcp t{40000, 27017, 77, 88, 0x18, {1, 2, 3, 4, 5}};
  for (int link :
       {capture::kLinkEthernet, capture::kLinkLinuxSll, capture::kLinkLinuxSll2, capture::kLinkNull,
        capture::kLinkLoop, capture::kLinkRaw, capture::kLinkRawDlt}) {
    for (bool v6 : {false, true}) {
      CAPTURE(link);
      CAPTURE(v6);
      const Bytes f = link_frame(link, ip_packet(t, v6, true), v6);
      const auto p = capture::parse_packet(link, f, static_cast<std::uint32_t>(f.size()));
      REQUIRE(p.status == capture::ParseStatus::tcp);
      CHECK(p.segment.src.port == 40000);
      CHECK(p.segment.dst.port == 27017);
      CHECK(p.segment.seq == 77);
      CHECK(p.segment.ack == 88);
      CHECK(p.segment.has(capture::tcp_flags::psh));
      // Ethernet padding is not payload: the IP length trims it.
      CHECK(Bytes(p.segment.payload.begin(), p.segment.payload.end()) == t.payload);
      CHECK(p.segment.src.to_string() == (v6 ? "[fd00::1]:40000" : "10.0.0.1:40000"));
    }
  }
}

TEST_CASE("VLAN tags are skipped: fragments, other protocols and short packets are not TCP") {
  const Tcp t{40000, 27017, 1, 2, 0x18, {9, 9}};
  const Bytes tagged = link_frame(capture::kLinkEthernet, ip_packet(t, false, true), false, true);
  const auto p = capture::parse_packet(capture::kLinkEthernet, tagged,
                                       static_cast<std::uint32_t>(tagged.size()));
  REQUIRE(p.status == capture::ParseStatus::tcp);
  CHECK(p.segment.payload.size() == 2);

  Bytes frag = ip_packet(t, false, true);
  frag[6] = 0x20;  // more fragments
  CHECK(capture::parse_packet(capture::kLinkRaw, frag, static_cast<std::uint32_t>(frag.size()))
            .status == capture::ParseStatus::fragment);
  Bytes udp = ip_packet(t, false, true);
  udp[9] = 17;
  CHECK(capture::parse_packet(capture::kLinkRaw, udp, static_cast<std::uint32_t>(udp.size()))
            .status == capture::ParseStatus::notTcp);
  const Bytes cut(tagged.begin(), tagged.begin() + 30);
  CHECK(capture::parse_packet(capture::kLinkEthernet, cut, 200).status ==
        capture::ParseStatus::truncated);
  CHECK(capture::parse_packet(9999, tagged, 100).status == capture::ParseStatus::unsupported);
  // Every prefix of a packet parses without reading past it (ASan checks the reads).
  for (std::size_t n = 0; n <= tagged.size(); ++n)
    (void)capture::parse_packet(capture::kLinkEthernet, part(tagged, 0, n),
                                static_cast<std::uint32_t>(tagged.size()));
}

// ============================================================= reassembly ==

TEST_CASE("stream: in-order, reordered, duplicated and overlapping segments give each byte once") {
  const Bytes data = seq_bytes(1000);
  capture::Stream s;
  Collect out;
  s.syn(0xFFFFFF00u);  // the sequence numbers wrap inside the stream
  const std::uint32_t base = 0xFFFFFF01u;
  auto seg = [&](std::size_t from, std::size_t n) {
    s.segment(base + static_cast<std::uint32_t>(from), part(data, from, n), out);
  };
  seg(0, 100);
  seg(300, 100);  // early
  seg(200, 150);  // early, overlaps the one before
  seg(0, 100);    // duplicate
  seg(50, 200);   // overlaps what was delivered and fills the hole to 250
  seg(600, 400);
  seg(400, 200);
  seg(400, 200);  // duplicate of what is now delivered
  CHECK(out.gaps.empty());
  CHECK(out.bytes == data);
  CHECK(s.counters().outOfOrder == 3);
  CHECK(s.counters().duplicate > 0);
  CHECK(s.buffered() == 0);
}

TEST_CASE("stream: a dropped segment becomes a gap when the peer acknowledges past it") {
  const Bytes data = seq_bytes(600);
  capture::Stream s;
  Collect out;
  s.syn(99);
  s.segment(100, part(data, 0, 200), out);
  s.segment(400, part(data, 300, 300), out);  // 200..300 never captured
  CHECK(out.bytes.size() == 200);
  s.acked(100 + 200, out);  // the peer has what we have: nothing missing yet
  CHECK(out.gaps.empty());
  s.acked(100 + 600, out);
  REQUIRE(out.gaps == std::vector<std::uint64_t>{100});
  CHECK(out.bytes.size() == 500);
  CHECK(Bytes(out.bytes.begin() + 200, out.bytes.end()) == Bytes(data.begin() + 300, data.end()));
}

TEST_CASE("stream: flush and the buffer bound declare gaps instead of waiting forever") {
  const Bytes data = seq_bytes(3000);
  {
    capture::Stream s;
    Collect out;
    s.syn(0);
    s.segment(1 + 1000, part(data, 1000, 500), out);
    s.flush(out);
    CHECK(out.gaps == std::vector<std::uint64_t>{1000});
    CHECK(out.bytes.size() == 500);
  }
  {
    capture::Stream s(1000);  // at most 1000 bytes wait
    Collect out;
    s.syn(0);
    s.segment(1 + 100, part(data, 100, 600), out);
    CHECK(out.bytes.empty());
    s.segment(1 + 700, part(data, 700, 600), out);  // 1200 waiting: give up on 0..100
    CHECK(out.gaps == std::vector<std::uint64_t>{100});
    CHECK(out.bytes.size() == 1200);
  }
  {
    capture::Stream s;  // no SYN: the first data starts the stream
    Collect out;
    s.segment(123456, part(data, 0, 10), out);
    CHECK(s.midstream());
    CHECK(out.bytes.size() == 10);
  }
}

// =============================================================== replayer ==

TEST_CASE("replayer: a whole conversation gives the events, on every link type, v4 and v6") {
  const Conversation c = Conversation::standard();
  for (int link : {capture::kLinkEthernet, capture::kLinkLinuxSll, capture::kLinkLinuxSll2,
                   capture::kLinkNull, capture::kLinkLoop, capture::kLinkRaw}) {
    for (bool v6 : {false, true}) {
      CAPTURE(link);
      CAPTURE(v6);
      capture::ReplayCounters k;
      const Recorder r = replay_packets(c.packets(link, v6), link, &k);
      check_standard(r);
      CHECK(k.gaps == 0);
      REQUIRE(!r.events.empty());
      const auto& first = r.events.front();
      CHECK(first.connection->client == (v6 ? "[fd00::1]:40000" : "10.0.0.1:40000"));
      CHECK(first.connection->server == (v6 ? "[fd00::2]:27017" : "10.0.0.2:27017"));
      CHECK(r.events.back().message == "client closed");
    }
  }
}

TEST_CASE("replayer: times and durations come from the packets") {
  const Conversation c = Conversation::standard();
  const auto ps = c.packets(capture::kLinkRaw, false);
  const Recorder r = replay_packets(ps, capture::kLinkRaw);
  // Packet i is at 1.7e9 s + 100 us * i: the first ping (packet 3) is
  // answered by packet 4.
  const auto& started = r.events.at(1);
  REQUIRE(started.type == monitor::EventType::commandStarted);
  CHECK(started.time.time_since_epoch() ==
        std::chrono::duration_cast<std::chrono::system_clock::duration>(ps.at(3).t));
  CHECK(r.events.at(2).durationMicros == 100);
}

TEST_CASE("replayer: reordered and duplicated segments give the same events as in order") {
  Conversation c = Conversation::standard();
  const Recorder inOrder = replay_packets(c.packets(capture::kLinkRaw, false), capture::kLinkRaw);
  auto ps = c.packets(capture::kLinkRaw, false);
  // The find's 3-segment reply arrives last segment first, each twice.
  std::vector<Packet> shuffled;
  std::size_t replyStart = 0;
  for (std::size_t i = 0; i < c.segs.size(); ++i)
    if (!c.segs[i].first && c.segs[i].second.payload.size() == 1000) {
      replyStart = i;
      break;
    }
  REQUIRE(replyStart > 0);
  for (std::size_t i = 0; i < ps.size(); ++i) {
    if (i == replyStart) {
      for (std::size_t j : {2, 1, 0, 2, 0}) shuffled.push_back(ps[replyStart + j]);
      i += 2;
      continue;
    }
    shuffled.push_back(ps[i]);
    if (i % 3 == 0) shuffled.push_back(ps[i]);  // retransmissions
  }
  capture::ReplayCounters k;
  const Recorder r = replay_packets(shuffled, capture::kLinkRaw, &k);
  CHECK(r.shape() == inOrder.shape());
  CHECK(k.outOfOrder >= 2);
  CHECK(k.duplicateBytes > 0);
  CHECK(k.gaps == 0);
}

TEST_CASE("replayer: a dropped segment is reported and the connection resynchronises") {
  Conversation c;
  c.handshake();
  c.send(true, ping(1));
  c.send(false, ok_reply(101, 1, 2500));  // 3 segments; the second is lost
  c.ack(true);
  c.send(true, ping(2));
  c.send(false, ok_reply(102, 2));
  c.ack(true);
  c.close();
  auto ps = c.packets(capture::kLinkRaw, false);
  std::size_t lost = 0;
  for (std::size_t i = 0, seen = 0; i < c.segs.size(); ++i)
    if (!c.segs[i].first && c.segs[i].second.payload.size() == 1000 && ++seen == 2) lost = i;
  REQUIRE(lost > 0);
  ps.erase(ps.begin() + static_cast<std::ptrdiff_t>(lost));
  capture::ReplayCounters k;
  const Recorder r = replay_packets(ps, capture::kLinkRaw, &k);
  CHECK(k.gaps == 1);
  CHECK(k.gapBytes == 1000);
  // ping 1 fails with the gap; a new connection number carries ping 2.
  CHECK(r.failed("ping") == 1);
  CHECK(r.succeeded("ping") == 1);
  CHECK(r.count(monitor::EventType::connectionOpened) == 2);
  CHECK(r.count(monitor::EventType::connectionClosed) == 2);
  bool gapClose = false;
  for (const auto& e : r.events)
    if (e.type == monitor::EventType::connectionClosed &&
        e.message.find("capture gap: 1000 bytes from the server missing") == 0)
      gapClose = true;
  CHECK(gapClose);
}

TEST_CASE("replayer: a lost reply fails its command, the next request starts afresh") {
  Conversation c;
  c.handshake();
  c.send(true, ping(1));
  c.send(false, ok_reply(101, 1));  // lost
  c.send(true, ping(2));            // its ACK says the reply arrived
  c.send(false, ok_reply(102, 2));
  c.close();
  auto ps = c.packets(capture::kLinkRaw, false);
  ps.erase(ps.begin() + 4);
  capture::ReplayCounters k;
  const Recorder r = replay_packets(ps, capture::kLinkRaw, &k);
  CHECK(k.gaps == 1);
  std::string got;
  for (const auto& l : r.shape()) got += l + "\n";
  CAPTURE(got);
  CHECK(r.shape() == std::vector<std::string>{
                         "connectionOpened",
                         "commandStarted ping 1",
                         "commandFailed ping 1 (capture gap: 48 bytes from the server missing)",
                         "connectionClosed (capture gap: 48 bytes from the server missing)",
                         "connectionOpened",
                         "commandStarted ping 2",
                         "commandSucceeded ping 2",
                         "connectionClosed (client closed)",
                     });
}

TEST_CASE("replayer: a capture that starts inside a message skips to the next header") {
  Conversation c;
  c.send(true, ping(1), 20);  // the capture starts after the first 20 bytes
  c.send(false, ok_reply(101, 1));
  c.send(true, ping(2));
  c.send(false, ok_reply(102, 2));
  auto ps = c.packets(capture::kLinkRaw, false);
  ps.erase(ps.begin());
  capture::ReplayCounters k;
  const Recorder r = replay_packets(ps, capture::kLinkRaw, &k);
  CHECK(k.midstream == 1);
  CHECK(k.skippedBytes > 0);
  CHECK(r.started("ping") == 1);
  CHECK(r.succeeded("ping") == 1);
  CHECK(k.unpairedReplies == 1);  // the reply to ping 1
  CHECK(r.events.back().message == "end of capture");
}

TEST_CASE("replayer: RST closes, a new SYN on the same ports is a new connection") {
  Conversation c;
  c.handshake();
  c.send(true, ping(1));
  c.segs.push_back({false, Tcp{27017, 40000, c.sseq, c.cseq, capture::tcp_flags::rst, {}}});
  c.cseq += 5000;
  c.handshake();
  c.send(true, ping(2));
  c.send(false, ok_reply(102, 2));
  c.close();
  const Recorder r = replay_packets(c.packets(capture::kLinkRaw, false), capture::kLinkRaw);
  CHECK(r.failed("ping") == 1);
  CHECK(r.succeeded("ping") == 1);
  CHECK(r.count(monitor::EventType::connectionOpened) == 2);
  REQUIRE(r.events.size() >= 4);
  CHECK(r.events.at(3).message == "upstream reset: Connection reset by peer");
}

TEST_CASE("pcap and pcapng files of each link type replay through libpcap") {
  const Conversation c = Conversation::standard();
  for (int link : {capture::kLinkEthernet, capture::kLinkLinuxSll, capture::kLinkLinuxSll2,
                   capture::kLinkNull, capture::kLinkLoop, capture::kLinkRaw}) {
    for (bool ng : {false, true}) {
      CAPTURE(link);
      CAPTURE(ng);
      const std::string path = temp_path(std::to_string(link) + (ng ? ".pcapng" : ".pcap"));
      const auto ps =
          c.packets(link, link == capture::kLinkLinuxSll2, link == capture::kLinkEthernet);
      if (ng) {
        write_pcapng(path, link, ps);
      } else {
        write_pcap(path, link, ps);
      }
      const Recorder r = replay_file(path);
      std::filesystem::remove(path);
      check_standard(r);
      REQUIRE(r.events.size() >= 2);
      CHECK(r.events.at(1).time.time_since_epoch() ==
            std::chrono::duration_cast<std::chrono::system_clock::duration>(ps.at(3).t));
    }
  }
}

TEST_CASE("a capture rotated over two files (tcpdump -C) is one conversation") {
  const Conversation c = Conversation::standard();
  const auto ps = c.packets(capture::kLinkEthernet, false);
  const std::size_t half = ps.size() / 2;
  const std::string a = temp_path("rot0.pcap"), b = temp_path("rot1.pcapng");
  write_pcap(a, capture::kLinkEthernet,
             {ps.begin(), ps.begin() + static_cast<std::ptrdiff_t>(half)});
  write_pcapng(b, capture::kLinkEthernet,
               {ps.begin() + static_cast<std::ptrdiff_t>(half), ps.end()});
  // What `varanus replay A B` does: one Replayer over the files in turn.
  Recorder r;
  capture::Replayer rp(r, {});
  for (const auto& path : {a, b}) {
    capture::PcapSource src = capture::PcapSource::open_file(path);
    const int link = src.link_type();
    src.loop([&](const capture::PacketView& p) { rp.packet(link, p.time, p.data, p.wireLength); });
  }
  rp.finish();
  std::filesystem::remove(a);
  std::filesystem::remove(b);
  check_standard(r);
  CHECK(r.events.back().message == "client closed");
}

TEST_CASE("an unreadable or foreign file is a CaptureError, not a crash") {
  CHECK_THROWS_AS(capture::PcapSource::open_file("/nonexistent/x.pcap"), capture::CaptureError);
  const std::string path = temp_path("garbage.pcap");
  std::ofstream(path) << "this is not a capture";
  CHECK_THROWS_AS(capture::PcapSource::open_file(path), capture::CaptureError);
  std::filesystem::remove(path);
}

// ========================================================= recorded data ==
// The packetbeat captures (VARANUS_TESTDATA_DIR/pcap, see its README).

namespace {
std::string pcap_data(const std::string& name) {
  return std::string(VARANUS_TESTDATA_DIR) + "/pcap/" + name;
}
}  // namespace

TEST_CASE("testdata: mongo_3.0_session.pcap, a shell session") {
  capture::ReplayCounters k;
  const Recorder r = replay_file(pcap_data("mongo_3.0_session.pcap"), {27017}, &k);
  CHECK(k.midstream == 1);
  CHECK(r.started("isMaster") == 11);
  CHECK(r.succeeded("isMaster") == 11);
  CHECK(r.started("listCollections") == 5);
  CHECK(r.started("insert") == 2);
  CHECK(r.started("update") == 1);
  CHECK(r.started("delete") == 1);
  CHECK(r.started("findandmodify") == 1);
  CHECK(r.started("find") == 3);
  CHECK(r.failed() == 0);
  CHECK(r.started() == r.succeeded());
}

TEST_CASE("testdata: duplicate keys succeed with writeErrors, the mongos error fails") {
  const Recorder r = replay_file(pcap_data("mongodb_insert_duplicate_key.pcap"), {27017, 27018});
  CHECK(r.started("insert") == 2);
  CHECK(r.succeeded("insert") == 2);
  CHECK(r.failed("replSetGetStatus") == 1);
  for (const auto& e : r.events) {
    if (e.type != monitor::EventType::commandSucceeded || e.commandName != "insert") continue;
    bson_t b;
    REQUIRE(bson_init_static(&b, e.document.data(), e.document.size()));
    CHECK(bson_has_field(&b, "writeErrors"));
  }
  CHECK(r.count(monitor::EventType::connectionOpened) == 2);
}

TEST_CASE("testdata: a reply split over TCP segments is decoded once") {
  capture::ReplayCounters k;
  const Recorder r = replay_file(pcap_data("mongodb_more_rows.pcap"), {27017}, &k);
  CHECK(r.started("find") == 1);
  REQUIRE(r.succeeded("find") == 1);
  CHECK(r.events.size() == 4);  // opened, started, succeeded, closed
  const auto& reply = r.events.at(2);
  bson_t b;
  REQUIRE(bson_init_static(&b, reply.document.data(), reply.document.size()));
  bson_iter_t it;
  REQUIRE(bson_iter_init(&it, &b));
  REQUIRE(bson_iter_find_descendant(&it, "cursor.firstBatch", &it));
  bson_iter_t batch;
  REQUIRE(bson_iter_recurse(&it, &batch));
  int docs = 0;
  while (bson_iter_next(&batch)) ++docs;
  CHECK(docs == 101);
}

TEST_CASE("testdata: a capture starting with a reply reports it, no started event, no crash") {
  capture::ReplayCounters k;
  std::vector<std::string> notes;
  const Recorder r =
      replay_file(pcap_data("mongodb_reply_request_reply.pcap"), {27017}, &k, &notes);
  CHECK(k.unpairedReplies == 1);
  CHECK(k.midstream == 1);
  CHECK(r.started() == 1);  // the buildinfo after it
  CHECK(r.succeeded("buildinfo") == 1);
  bool noted = false;
  for (const auto& n : notes) noted |= n.find("whose request is not in the capture") != n.npos;
  CHECK(noted);
}

TEST_CASE("testdata: the bogus-opcode connections are reported") {
  capture::ReplayCounters k;
  std::vector<std::string> notes;
  const Recorder r =
      replay_file(pcap_data("mongodb_invalid_opcode_2269.pcap"), {27017}, &k, &notes);
  CHECK(k.unknownOpcodes == 3);
  CHECK(r.count(monitor::EventType::connectionOpened) == 3);
  CHECK(r.count(monitor::EventType::connectionClosed) == 3);
  CHECK(r.started() == 0);
  std::size_t noted = 0;
  for (const auto& n : notes) noted += n.find("unknown opCode 2269") != n.npos;
  CHECK(noted == 3);
}

TEST_CASE("testdata: the small MongoDB 2.6 conversations") {
  struct Expect {
    const char* file;
    std::map<std::string, std::size_t> started;
  };
  const Expect expects[] = {
      {"mongodb_inserts.pcap", {{"insert", 2}, {"isMaster", 3}}},
      {"mongodb_find.pcap", {{"find", 1}, {"isMaster", 1}}},
      {"mongodb_create_collection.pcap", {{"create", 1}, {"find", 2}, {"isMaster", 1}}},
      {"mongodb_use_db.pcap", {{"isMaster", 1}}},
      {"mongo_one_row.pcap", {{"find", 1}}},
  };
  for (const auto& x : expects) {
    CAPTURE(x.file);
    const Recorder r = replay_file(pcap_data(x.file));
    std::size_t total = 0;
    for (const auto& [name, n] : x.started) {
      CAPTURE(name);
      CHECK(r.started(name) == n);
      CHECK(r.succeeded(name) == n);
      total += n;
    }
    CHECK(r.started() == total);
    CHECK(r.failed() == 0);
  }
}
