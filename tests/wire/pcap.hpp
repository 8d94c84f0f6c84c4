// A tiny pure reader for classic libpcap files (Ethernet / Linux cooked /
// BSD loopback / raw IPv4) and a TCP reassembler that follows each
// direction of each connection by sequence number. Test support only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace varanus::wire::test {

struct TcpSegment {
  std::uint32_t srcIp = 0, dstIp = 0;
  std::uint16_t srcPort = 0, dstPort = 0;
  std::uint32_t seq = 0;
  bool syn = false, fin = false, rst = false;
  std::vector<std::uint8_t> payload;
};

/// Every IPv4/TCP segment in the file, in capture order. Empty optional if
/// the file is not a classic pcap file.
std::optional<std::vector<TcpSegment>> read_pcap_tcp(std::span<const std::uint8_t> file);

/// One direction of one TCP connection, reassembled.
struct TcpStream {
  std::uint32_t srcIp = 0, dstIp = 0;
  std::uint16_t srcPort = 0, dstPort = 0;
  std::vector<std::uint8_t> bytes;  ///< contiguous bytes from the first one seen
  bool sawSyn = false;              ///< the stream starts at its true beginning
  bool gap = false;                 ///< bytes missing after `bytes` (capture loss)
  std::size_t firstPacket = 0;      ///< capture index of the first segment (for ordering)

  std::string name() const;  ///< "a.b.c.d:p -> e.f.g.h:q"
};

/// Groups segments by direction and orders each by sequence number
/// (handles reordering, retransmissions, overlaps). Streams come in the
/// order their first segment was captured.
std::vector<TcpStream> reassemble(const std::vector<TcpSegment>& segments);

}  // namespace varanus::wire::test
