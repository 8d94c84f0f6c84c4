// varanus::capture — link layer to TCP: one captured packet in, the TCP
// segment inside it out (addresses, ports, sequence numbers, flags, payload).
// Pure: bytes in, values out, nothing allocated.
//
// Link types (LINKTYPE_* of pcap/pcapng, and the DLT_* values libpcap
// reports for live captures): Ethernet (with any number of 802.1Q / 802.1ad
// VLAN tags), Linux cooked v1 (SLL) and v2 (SLL2), BSD loopback/null (either
// byte order) and OpenBSD loop, raw IP (v4 or v6). Network: IPv4 (options,
// Ethernet padding trimmed by the total length; fragments are not
// reassembled: counted and skipped) and IPv6 (extension headers skipped).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace varanus::capture {

/// Link types accepted (values of pcap's LINKTYPE_ / DLT_).
enum LinkType : int {
  kLinkNull = 0,  ///< BSD loopback: 4-byte address family, host byte order
  kLinkEthernet = 1,
  kLinkRawDlt = 12,     ///< DLT_RAW on most systems (live captures)
  kLinkRawDltBsd = 14,  ///< DLT_RAW on OpenBSD
  kLinkRaw = 101,       ///< LINKTYPE_RAW
  kLinkLoop = 108,      ///< OpenBSD loop: 4-byte address family, network byte order
  kLinkLinuxSll = 113,
  kLinkIpv4 = 228,
  kLinkIpv6 = 229,
  kLinkLinuxSll2 = 276,
};
/// True for the link types above.
bool link_type_supported(int linkType) noexcept;

/// One end of a TCP connection.
struct Address {
  std::uint8_t family = 4;  ///< 4 or 6
  std::array<std::uint8_t, 16> ip{};
  std::uint16_t port = 0;
  bool operator==(const Address&) const = default;
  /// "10.0.0.1:27017", "[::1]:27017".
  std::string to_string() const;
};

struct AddressHash {
  std::size_t operator()(const Address& a) const noexcept;
};

namespace tcp_flags {
inline constexpr std::uint8_t fin = 0x01, syn = 0x02, rst = 0x04, psh = 0x08, ack = 0x10;
}

struct Segment {
  Address src;
  Address dst;
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint8_t flags = 0;
  std::span<const std::uint8_t> payload;  ///< what the capture holds of it
  /// Payload bytes the packet carried but the capture cut off (snap length).
  std::uint32_t missing = 0;
  bool has(std::uint8_t f) const noexcept { return (flags & f) != 0; }
};

enum class ParseStatus {
  tcp,         ///< `segment` is set
  notTcp,      ///< another protocol (ARP, UDP, ICMP, ...)
  fragment,    ///< an IP fragment (not reassembled)
  truncated,   ///< the capture cut the packet before the TCP header ended
  malformed,   ///< a length or header field that cannot be right
  unsupported  ///< unknown link type
};

struct Parsed {
  ParseStatus status = ParseStatus::notTcp;
  Segment segment;
};

/// `data`: the captured bytes; `wireLength`: the packet's length on the wire
/// (>= data.size(); the difference is what the snap length cut off).
Parsed parse_packet(int linkType, std::span<const std::uint8_t> data,
                    std::uint32_t wireLength) noexcept;

}  // namespace varanus::capture
