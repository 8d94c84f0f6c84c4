// varanus-make-capture: writes a large synthetic pcap of MongoDB traffic, to
// measure how fast `varanus replay` reads (README, "Without a proxy").
//
//   varanus-make-capture OUT.pcap MEGABYTES [CONNECTIONS]
//
// Ethernet, IPv4, MSS 1448: CONNECTIONS connections (default 64) to
// 10.1.0.1:27017 take turns sending an OP_MSG (find, insert or getMore,
// 150 B to 4 KB) and getting its reply (100 B to 48 KB, so most replies span
// several segments), each acknowledged, until the file holds MEGABYTES.
// Deterministic (a fixed LCG), nothing committed.
#include <bson/bson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "varanus/wire/builder.hpp"

namespace {

using Bytes = std::vector<std::uint8_t>;

std::uint64_t rng = 0x9E3779B97F4A7C15ULL;
std::uint32_t next(std::uint32_t n) {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<std::uint32_t>(rng >> 33) % n;
}

void put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& b, std::uint32_t v) {
  put16(b, static_cast<std::uint16_t>(v >> 16));
  put16(b, static_cast<std::uint16_t>(v));
}

struct Writer {
  FILE* f = nullptr;
  std::uint64_t bytes = 0;
  std::uint64_t micros = 1'700'000'000'000'000ULL;
  Bytes pkt;
  void raw(const void* p, std::size_t n) {
    std::fwrite(p, 1, n, f);
    bytes += n;
  }
  void le32(std::uint32_t v) { raw(&v, 4); }  // x86: host order is little endian
  void header() {
    le32(0xa1b2c3d4);
    const std::uint16_t v[2] = {2, 4};
    raw(v, 4);
    le32(0);
    le32(0);
    le32(262144);
    le32(1);  // Ethernet
  }
  void segment(std::uint32_t client, bool fromClient, std::uint32_t seq, std::uint32_t ack,
               std::uint8_t flags, const std::uint8_t* payload, std::size_t n) {
    pkt.clear();
    pkt.resize(12, 0x02);
    put16(pkt, 0x0800);
    pkt.push_back(0x45);
    pkt.push_back(0);
    put16(pkt, static_cast<std::uint16_t>(40 + n));
    put32(pkt, 0x4000);
    pkt.push_back(64);
    pkt.push_back(6);
    put16(pkt, 0);
    const std::uint32_t clientIp = 0x0A020000 | (client >> 8 & 0xFF00) | (client & 0xFF);
    const std::uint32_t serverIp = 0x0A010001;
    put32(pkt, fromClient ? clientIp : serverIp);
    put32(pkt, fromClient ? serverIp : clientIp);
    const auto clientPort = static_cast<std::uint16_t>(30000 + client % 30000);
    put16(pkt, fromClient ? clientPort : 27017);
    put16(pkt, fromClient ? 27017 : clientPort);
    put32(pkt, seq);
    put32(pkt, ack);
    pkt.push_back(0x50);
    pkt.push_back(flags);
    put16(pkt, 65535);
    put32(pkt, 0);
    pkt.insert(pkt.end(), payload, payload + n);
    micros += 1 + next(40);
    le32(static_cast<std::uint32_t>(micros / 1'000'000));
    le32(static_cast<std::uint32_t>(micros % 1'000'000));
    le32(static_cast<std::uint32_t>(pkt.size()));
    le32(static_cast<std::uint32_t>(pkt.size()));
    raw(pkt.data(), pkt.size());
  }
};

struct Conn {
  std::uint32_t id;
  std::uint32_t cseq = 1000, sseq = 900000;
  std::int32_t requestId = 1;
  bool open = false;
};

Bytes command(std::int32_t id) {
  const std::uint32_t kind = next(3);
  std::string pad(100 + next(kind == 1 ? 4000 : 300), 'x');
  std::string json =
      kind == 0 ? R"({"find": "orders", "filter": {"status": "open", "note": ")" + pad +
                      R"("}, "limit": 50, "$db": "shop"})"
      : kind == 1
          ? R"({"insert": "orders", "documents": [{"_id": )" + std::to_string(id) +
                R"(, "body": ")" + pad + R"("}], "ordered": true, "$db": "shop"})"
          : R"({"getMore": {"$numberLong": "12345"}, "collection": "orders", "$db": "shop"})";
  bson_error_t err;
  bson_t* d = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json.data()),
                                 static_cast<ssize_t>(json.size()), &err);
  Bytes f = varanus::wire::build_op_msg(id, 0, 0, varanus::wire::BsonView::of(d));
  bson_destroy(d);
  return f;
}

Bytes reply(std::int32_t id, std::int32_t to) {
  std::string pad(next(10) == 0 ? 20000 + next(28000) : 50 + next(3000), 'r');
  std::string json =
      R"({"cursor": {"id": 0, "ns": "shop.orders", "firstBatch": [{"_id": 1, "d": ")" + pad +
      R"("}]}, "ok": 1.0})";
  bson_error_t err;
  bson_t* d = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json.data()),
                                 static_cast<ssize_t>(json.size()), &err);
  Bytes f = varanus::wire::build_op_msg(id, to, 0, varanus::wire::BsonView::of(d));
  bson_destroy(d);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: varanus-make-capture OUT.pcap MEGABYTES [CONNECTIONS]\n");
    return 2;
  }
  const std::uint64_t target = std::strtoull(argv[2], nullptr, 10) << 20;
  const std::uint32_t nconn = argc > 3 ? static_cast<std::uint32_t>(std::atoi(argv[3])) : 64;
  Writer w;
  w.f = std::fopen(argv[1], "wb");
  if (!w.f) {
    std::perror(argv[1]);
    return 1;
  }
  std::setvbuf(w.f, nullptr, _IOFBF, 1 << 20);
  w.header();
  std::vector<Conn> conns(nconn);
  for (std::uint32_t i = 0; i < nconn; ++i) conns[i].id = i;
  constexpr std::size_t kMss = 1448;
  std::uint64_t exchanges = 0;
  while (w.bytes < target) {
    Conn& c = conns[next(nconn)];
    if (!c.open) {
      w.segment(c.id, true, c.cseq - 1, 0, 0x02, nullptr, 0);
      w.segment(c.id, false, c.sseq - 1, c.cseq, 0x12, nullptr, 0);
      w.segment(c.id, true, c.cseq, c.sseq, 0x10, nullptr, 0);
      c.open = true;
    }
    const Bytes req = command(c.requestId);
    for (std::size_t i = 0; i < req.size(); i += kMss) {
      const std::size_t n = std::min(kMss, req.size() - i);
      w.segment(c.id, true, c.cseq, c.sseq, 0x18, req.data() + i, n);
      c.cseq += static_cast<std::uint32_t>(n);
    }
    const Bytes rep = reply(c.requestId + 1000000, c.requestId);
    for (std::size_t i = 0; i < rep.size(); i += kMss) {
      const std::size_t n = std::min(kMss, rep.size() - i);
      w.segment(c.id, false, c.sseq, c.cseq, 0x18, rep.data() + i, n);
      c.sseq += static_cast<std::uint32_t>(n);
      if ((i / kMss) % 2 == 1) w.segment(c.id, true, c.cseq, c.sseq, 0x10, nullptr, 0);
    }
    w.segment(c.id, true, c.cseq, c.sseq, 0x10, nullptr, 0);
    c.requestId += 1;
    ++exchanges;
  }
  for (Conn& c : conns) {
    if (!c.open) continue;
    w.segment(c.id, true, c.cseq, c.sseq, 0x11, nullptr, 0);
    w.segment(c.id, false, c.sseq, c.cseq + 1, 0x11, nullptr, 0);
  }
  std::fclose(w.f);
  std::fprintf(stderr, "%s: %llu bytes, %llu commands on %u connections\n", argv[1],
               static_cast<unsigned long long>(w.bytes), static_cast<unsigned long long>(exchanges),
               nconn);
  return 0;
}
