// Link layer -> IP -> TCP, by hand: every length is checked against what
// the capture holds before it is read.
#include "varanus/capture/packet.hpp"

#include <cstdio>
#include <cstring>

namespace varanus::capture {

namespace {

std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}
std::uint32_t le32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[3]} << 24) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[1]} << 8) |
         p[0];
}

constexpr std::uint16_t kEtherIpv4 = 0x0800;
constexpr std::uint16_t kEtherIpv6 = 0x86DD;
constexpr std::uint16_t kEtherVlan = 0x8100;
constexpr std::uint16_t kEtherQinQ = 0x88A8;
constexpr std::uint16_t kEtherQinQOld = 0x9100;

/// The bytes of the packet that follow a header of `n` bytes, and how many
/// the capture cut off.
struct View {
  std::span<const std::uint8_t> data;
  std::uint32_t cut = 0;  ///< bytes of the packet beyond data (snap length)
  View skip(std::size_t n) const noexcept { return {data.subspan(n), cut}; }
};

Parsed fail(ParseStatus s) noexcept {
  Parsed p;
  p.status = s;
  return p;
}

Parsed parse_tcp(View v, Segment seg) noexcept {
  // `v.data` holds the TCP header and payload as far as captured; the IP
  // layer already trimmed it to the IP length.
  if (v.data.size() < 20) return fail(ParseStatus::truncated);
  const std::uint8_t* t = v.data.data();
  const std::size_t headerLength = static_cast<std::size_t>(t[12] >> 4) * 4;
  if (headerLength < 20) return fail(ParseStatus::malformed);
  if (v.data.size() < headerLength) return fail(ParseStatus::truncated);
  seg.src.port = be16(t);
  seg.dst.port = be16(t + 2);
  seg.seq = be32(t + 4);
  seg.ack = be32(t + 8);
  seg.flags = t[13];
  seg.payload = v.data.subspan(headerLength);
  seg.missing = v.cut;
  Parsed p;
  p.status = ParseStatus::tcp;
  p.segment = seg;
  return p;
}

/// Trims `v` to an IP payload of `length` bytes (Ethernet pads short frames).
View trim(View v, std::size_t length) noexcept {
  if (v.data.size() >= length) return {v.data.first(length), 0};
  const std::size_t cut = length - v.data.size();
  return {v.data, static_cast<std::uint32_t>(cut <= v.cut ? cut : v.cut)};
}

Parsed parse_ipv4(View v) noexcept {
  if (v.data.size() < 20) return fail(ParseStatus::truncated);
  const std::uint8_t* h = v.data.data();
  if ((h[0] >> 4) != 4) return fail(ParseStatus::malformed);
  const std::size_t ihl = static_cast<std::size_t>(h[0] & 0x0F) * 4;
  const std::size_t total = be16(h + 2);
  if (ihl < 20 || total < ihl) return fail(ParseStatus::malformed);
  if (v.data.size() < ihl) return fail(ParseStatus::truncated);
  const std::uint16_t frag = be16(h + 6);
  if ((frag & 0x2000) != 0 || (frag & 0x1FFF) != 0) return fail(ParseStatus::fragment);
  if (h[9] != 6) return fail(ParseStatus::notTcp);
  Segment seg;
  seg.src.family = seg.dst.family = 4;
  std::memcpy(seg.src.ip.data(), h + 12, 4);
  std::memcpy(seg.dst.ip.data(), h + 16, 4);
  // total == 0: TCP segmentation offload on the capturing host; take what is there.
  const View payload = total == 0 ? v.skip(ihl) : trim(v, total).skip(ihl);
  return parse_tcp(payload, seg);
}

Parsed parse_ipv6(View v) noexcept {
  if (v.data.size() < 40) return fail(ParseStatus::truncated);
  const std::uint8_t* h = v.data.data();
  if ((h[0] >> 4) != 6) return fail(ParseStatus::malformed);
  const std::size_t payloadLength = be16(h + 4);
  Segment seg;
  seg.src.family = seg.dst.family = 6;
  std::memcpy(seg.src.ip.data(), h + 8, 16);
  std::memcpy(seg.dst.ip.data(), h + 24, 16);
  View rest = payloadLength == 0 ? v.skip(40) : trim(v, 40 + payloadLength).skip(40);
  std::uint8_t next = h[6];
  for (int hops = 0; hops < 8; ++hops) {
    switch (next) {
      case 6:
        return parse_tcp(rest, seg);
      case 0:     // hop-by-hop options
      case 43:    // routing
      case 60: {  // destination options
        if (rest.data.size() < 8) return fail(ParseStatus::truncated);
        const std::size_t len = (static_cast<std::size_t>(rest.data[1]) + 1) * 8;
        if (rest.data.size() < len) return fail(ParseStatus::truncated);
        next = rest.data[0];
        rest = rest.skip(len);
        break;
      }
      case 44:
        return fail(ParseStatus::fragment);
      default:
        return fail(ParseStatus::notTcp);
    }
  }
  return fail(ParseStatus::malformed);
}

Parsed parse_ip(View v) noexcept {
  if (v.data.empty()) return fail(ParseStatus::truncated);
  switch (v.data[0] >> 4) {
    case 4:
      return parse_ipv4(v);
    case 6:
      return parse_ipv6(v);
    default:
      return fail(ParseStatus::notTcp);
  }
}

/// An EtherType and what follows it; VLAN tags are skipped.
Parsed parse_ethertype(std::uint16_t type, View v) noexcept {
  for (int tags = 0; tags < 8; ++tags) {
    if (type == kEtherIpv4) return parse_ipv4(v);
    if (type == kEtherIpv6) return parse_ipv6(v);
    if (type != kEtherVlan && type != kEtherQinQ && type != kEtherQinQOld)
      return fail(ParseStatus::notTcp);
    if (v.data.size() < 4) return fail(ParseStatus::truncated);
    type = be16(v.data.data() + 2);
    v = v.skip(4);
  }
  return fail(ParseStatus::malformed);
}

/// BSD AF_INET / AF_INET6 values (AF_INET6 differs between systems).
Parsed parse_family(std::uint32_t family, View v) noexcept {
  if (family == 2) return parse_ipv4(v);
  if (family == 10 || family == 24 || family == 28 || family == 30) return parse_ipv6(v);
  return fail(ParseStatus::notTcp);
}

}  // namespace

bool link_type_supported(int linkType) noexcept {
  switch (linkType) {
    case kLinkNull:
    case kLinkEthernet:
    case kLinkRawDlt:
    case kLinkRawDltBsd:
    case kLinkRaw:
    case kLinkLoop:
    case kLinkLinuxSll:
    case kLinkIpv4:
    case kLinkIpv6:
    case kLinkLinuxSll2:
      return true;
    default:
      return false;
  }
}

std::string Address::to_string() const {
  char buf[64];
  if (family == 4) {
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u:%u", ip[0], ip[1], ip[2], ip[3], port);
    return buf;
  }
  // RFC 5952 style: the longest run of zero groups (two or more) as "::".
  std::uint16_t g[8];
  for (int i = 0; i < 8; ++i) g[i] = be16(ip.data() + 2 * i);
  int bestStart = -1, bestLen = 0;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0) ++j;
    if (j - i > bestLen && j - i >= 2) bestStart = i, bestLen = j - i;
    i = j;
  }
  std::string out = "[";
  for (int i = 0; i < 8; ++i) {
    if (i == bestStart) {
      out += "::";
      i += bestLen - 1;
      continue;
    }
    if (!out.empty() && out.back() != '[' && out.back() != ':') out += ':';
    std::snprintf(buf, sizeof buf, "%x", g[i]);
    out += buf;
  }
  out += "]:";
  out += std::to_string(port);
  return out;
}

std::size_t AddressHash::operator()(const Address& a) const noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](std::uint8_t b) {
    h ^= b;
    h *= 1099511628211ULL;
  };
  for (std::uint8_t b : a.ip) mix(b);
  mix(static_cast<std::uint8_t>(a.port));
  mix(static_cast<std::uint8_t>(a.port >> 8));
  mix(a.family);
  return static_cast<std::size_t>(h);
}

Parsed parse_packet(int linkType, std::span<const std::uint8_t> data,
                    std::uint32_t wireLength) noexcept {
  const View v{data,
               wireLength > data.size() ? static_cast<std::uint32_t>(wireLength - data.size()) : 0};
  const std::uint8_t* p = data.data();
  switch (linkType) {
    case kLinkEthernet:
      if (data.size() < 14) return fail(ParseStatus::truncated);
      return parse_ethertype(be16(p + 12), v.skip(14));
    case kLinkLinuxSll:
      if (data.size() < 16) return fail(ParseStatus::truncated);
      return parse_ethertype(be16(p + 14), v.skip(16));
    case kLinkLinuxSll2:
      if (data.size() < 20) return fail(ParseStatus::truncated);
      return parse_ethertype(be16(p), v.skip(20));
    case kLinkNull: {
      if (data.size() < 4) return fail(ParseStatus::truncated);
      // Host byte order of the capturing machine: whichever reading is small.
      const std::uint32_t le = le32(p);
      return parse_family(le < 256 ? le : be32(p), v.skip(4));
    }
    case kLinkLoop:
      if (data.size() < 4) return fail(ParseStatus::truncated);
      return parse_family(be32(p), v.skip(4));
    case kLinkRaw:
    case kLinkRawDlt:
    case kLinkRawDltBsd:
      return parse_ip(v);
    case kLinkIpv4:
      return parse_ipv4(v);
    case kLinkIpv6:
      return parse_ipv6(v);
    default:
      return fail(ParseStatus::unsupported);
  }
}

}  // namespace varanus::capture
