// libFuzzer target over the capture reader (src/capture): what `varanus
// replay` runs on a capture file it did not make.
//
// The first byte chooses the mode:
//   even: the rest is a pcap/pcapng file, read through libpcap from memory
//         (PcapSource::open_buffer) and replayed;
//   odd:  the rest is a list of packets [link-type index][length: 2 bytes LE]
//         [bytes], each given to the Replayer directly, so that the link
//         layer / IP / TCP parsers and the reassembly see arbitrary bytes
//         even when no valid file header is found.
// Each event is consumed (its connection info and document read). Any
// crash, leak, out-of-bounds read or UB fails.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include "varanus/capture/packet.hpp"
#include "varanus/capture/pcap_source.hpp"
#include "varanus/capture/replayer.hpp"

namespace c = varanus::capture;

namespace {

struct Sink : varanus::monitor::EventOutput {
  std::size_t bytes = 0;
  void publish(varanus::monitor::Event&& e) override {
    bytes += e.document.size() + e.commandName.size() + e.message.size();
    if (e.connection) bytes += e.connection->client.size();
  }
};

constexpr int kLinks[] = {c::kLinkEthernet, c::kLinkLinuxSll, c::kLinkLinuxSll2, c::kLinkNull,
                          c::kLinkLoop,     c::kLinkRaw,      c::kLinkIpv4,      c::kLinkIpv6};

c::ReplayOptions options() {
  c::ReplayOptions o;
  o.ports = {27017, 27018};
  o.maxBuffered = 64 << 10;  // gaps by the buffer bound are reached too
  o.tracker.maxMessageSize = 1 << 20;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::span<const std::uint8_t> rest(data + 1, size - 1);
  Sink sink;
  c::Replayer replayer(sink, options());
  if ((data[0] & 1) == 0) {
    try {
      c::PcapSource src = c::PcapSource::open_buffer(rest);
      const int link = src.link_type();
      src.loop(
          [&](const c::PacketView& p) { replayer.packet(link, p.time, p.data, p.wireLength); });
    } catch (const c::CaptureError&) {
    }
  } else {
    std::size_t i = 0;
    std::int64_t t = 0;
    while (i + 3 <= rest.size()) {
      const int link = kLinks[rest[i] % std::size(kLinks)];
      const std::size_t n = rest[i + 1] | (static_cast<std::size_t>(rest[i + 2]) << 8);
      i += 3;
      const std::size_t take = n < rest.size() - i ? n : rest.size() - i;
      t += 1000;
      // The wire length may claim more than was captured (a snap length).
      replayer.packet(link, std::chrono::nanoseconds(t), rest.subspan(i, take),
                      static_cast<std::uint32_t>(n + (rest[i - 3] & 0x80 ? 100 : 0)));
      i += take;
    }
  }
  replayer.finish();
  return 0;
}
