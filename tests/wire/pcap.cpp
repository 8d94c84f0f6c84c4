#include "pcap.hpp"

#include <algorithm>
#include <tuple>

namespace varanus::wire::test {

namespace {

struct In {
  std::span<const std::uint8_t> b;
  bool swap = false;
  std::uint32_t u32(std::size_t at) const {
    const std::uint8_t* p = b.data() + at;
    return swap ? (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                      (std::uint32_t{p[2]} << 8) | p[3]
                : (std::uint32_t{p[3]} << 24) | (std::uint32_t{p[2]} << 16) |
                      (std::uint32_t{p[1]} << 8) | p[0];
  }
};

std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

// Parses an IPv4 packet carrying TCP; false for anything else.
bool parse_ipv4_tcp(std::span<const std::uint8_t> ip, TcpSegment& s) {
  if (ip.size() < 20 || (ip[0] >> 4) != 4) return false;
  const std::size_t ihl = static_cast<std::size_t>(ip[0] & 0x0f) * 4;
  const std::size_t total = be16(&ip[2]);
  if (ihl < 20 || total < ihl || total > ip.size()) return false;  // trims Ethernet padding
  if (ip[9] != 6) return false;                                    // TCP only
  if ((be16(&ip[6]) & 0x3fff) != 0) return false;                  // fragments: not in our data
  s.srcIp = be32(&ip[12]);
  s.dstIp = be32(&ip[16]);
  auto tcp = ip.subspan(ihl, total - ihl);
  if (tcp.size() < 20) return false;
  const std::size_t doff = static_cast<std::size_t>(tcp[12] >> 4) * 4;
  if (doff < 20 || doff > tcp.size()) return false;
  s.srcPort = be16(&tcp[0]);
  s.dstPort = be16(&tcp[2]);
  s.seq = be32(&tcp[4]);
  const std::uint8_t flags = tcp[13];
  s.fin = flags & 0x01;
  s.syn = flags & 0x02;
  s.rst = flags & 0x04;
  s.payload.assign(tcp.begin() + static_cast<std::ptrdiff_t>(doff), tcp.end());
  return true;
}

std::string ip_str(std::uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." +
         std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255);
}

}  // namespace

std::optional<std::vector<TcpSegment>> read_pcap_tcp(std::span<const std::uint8_t> file) {
  if (file.size() < 24) return std::nullopt;
  In in{file};
  const std::uint32_t magic = in.u32(0);
  if (magic == 0xd4c3b2a1u || magic == 0x4d3cb2a1u) {
    in.swap = true;
  } else if (magic != 0xa1b2c3d4u && magic != 0xa1b23c4du) {
    return std::nullopt;
  }
  const std::uint32_t linktype = in.u32(20) & 0x0fffffffu;
  std::vector<TcpSegment> out;
  std::size_t pos = 24;
  while (pos + 16 <= file.size()) {
    const std::uint32_t incl = in.u32(pos + 8);
    pos += 16;
    if (incl > file.size() - pos) break;  // cut-off last record
    auto pkt = file.subspan(pos, incl);
    pos += incl;
    std::span<const std::uint8_t> ip;
    switch (linktype) {
      case 1: {  // Ethernet, possibly VLAN-tagged
        if (pkt.size() < 14) continue;
        std::size_t off = 12;
        std::uint16_t type = be16(&pkt[off]);
        while ((type == 0x8100 || type == 0x88a8) && pkt.size() >= off + 6) {
          off += 4;
          type = be16(&pkt[off]);
        }
        if (type != 0x0800) continue;
        ip = pkt.subspan(off + 2);
        break;
      }
      case 113:  // Linux cooked capture
        if (pkt.size() < 16 || be16(&pkt[14]) != 0x0800) continue;
        ip = pkt.subspan(16);
        break;
      case 0:  // BSD loopback: 4-byte address family in host order
        if (pkt.size() < 4) continue;
        ip = pkt.subspan(4);
        break;
      case 101:  // raw IP
        ip = pkt;
        break;
      default:
        return std::nullopt;
    }
    TcpSegment s;
    if (parse_ipv4_tcp(ip, s)) out.push_back(std::move(s));
  }
  return out;
}

std::string TcpStream::name() const {
  return ip_str(srcIp) + ":" + std::to_string(srcPort) + " -> " + ip_str(dstIp) + ":" +
         std::to_string(dstPort);
}

std::vector<TcpStream> reassemble(const std::vector<TcpSegment>& segments) {
  using Key = std::tuple<std::uint32_t, std::uint16_t, std::uint32_t, std::uint16_t>;
  struct Dir {
    std::size_t first = 0;
    bool syn = false;
    std::uint32_t isn = 0;  // sequence number of the first payload byte
    bool have_isn = false;
    std::vector<const TcpSegment*> segs;
  };
  std::map<Key, Dir> dirs;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const TcpSegment& s = segments[i];
    const Key k{s.srcIp, s.srcPort, s.dstIp, s.dstPort};
    auto [it, fresh] = dirs.try_emplace(k);
    Dir& d = it->second;
    if (fresh) d.first = i;
    if (s.syn) {
      d.syn = true;
      d.isn = s.seq + 1;
      d.have_isn = true;
    }
    if (!s.payload.empty()) d.segs.push_back(&s);
  }
  std::vector<TcpStream> out;
  for (auto& [k, d] : dirs) {
    TcpStream st;
    std::tie(st.srcIp, st.srcPort, st.dstIp, st.dstPort) = k;
    st.sawSyn = d.syn;
    st.firstPacket = d.first;
    if (!d.segs.empty()) {
      // Without a SYN, the stream starts at the lowest sequence number seen
      // (relative to the first segment, so wrap-around is handled).
      std::uint32_t base = d.have_isn ? d.isn : d.segs.front()->seq;
      if (!d.have_isn) {
        for (const TcpSegment* s : d.segs) {
          if (static_cast<std::int32_t>(s->seq - base) < 0) base = s->seq;
        }
      }
      std::stable_sort(d.segs.begin(), d.segs.end(), [&](const TcpSegment* a, const TcpSegment* b) {
        return a->seq - base < b->seq - base;
      });
      std::uint64_t end = 0;  // relative sequence of the next byte wanted
      for (const TcpSegment* s : d.segs) {
        const std::uint64_t rel = s->seq - base;
        const std::uint64_t send = rel + s->payload.size();
        if (rel > end) {
          st.gap = true;
          break;
        }
        if (send <= end) continue;  // retransmission of what we have
        st.bytes.insert(st.bytes.end(), s->payload.begin() + static_cast<std::ptrdiff_t>(end - rel),
                        s->payload.end());
        end = send;
      }
    }
    out.push_back(std::move(st));
  }
  std::sort(out.begin(), out.end(),
            [](const TcpStream& a, const TcpStream& b) { return a.firstPacket < b.firstPacket; });
  return out;
}

}  // namespace varanus::wire::test
