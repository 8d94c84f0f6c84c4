// libFuzzer target over the Tracker, the per-connection state machine that
// sees untrusted bytes from both sides: the input is a script of chunks,
// each going to the client or the server side, interleaved as the fuzzer
// likes, then the connection closes. Any crash, leak, out-of-bounds read
// or UB fails, and so does a broken promise of the Tracker: every
// commandStarted gets exactly one terminal event (succeeded or failed),
// and connectionOpened / connectionClosed come once each, first and last.
//
// Input: byte 0 chooses the options (captureDocuments, a document bound,
// a small maxMessageSize); then chunks of [header][length lo][length hi]
// [bytes]: header bit 0 = from the server, bit 1 = advance the clock.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>

#include "varanus/monitor/tracker.hpp"

namespace m = varanus::monitor;

namespace {

struct Counter final : m::EventOutput {
  std::size_t started = 0, terminal = 0, opened = 0, closed = 0, total = 0;
  bool closedLast = true;
  void publish(m::Event&& e) override {
    ++total;
    if (closed > 0) closedLast = false;  // nothing may follow connectionClosed
    switch (e.type) {
      case m::EventType::commandStarted:
        ++started;
        break;
      case m::EventType::commandSucceeded:
      case m::EventType::commandFailed:
        ++terminal;
        break;
      case m::EventType::connectionOpened:
        if (total != 1) closedLast = false;  // and it comes first
        ++opened;
        break;
      case m::EventType::connectionClosed:
        ++closed;
        break;
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t opts = data[0];
  m::TrackerOptions o;
  o.captureDocuments = (opts & 1) != 0;
  if (opts & 2) o.documentBound.jsonLength = 64u << ((opts >> 4) & 7);
  o.documentBound.typeNames = (opts & 4) != 0;
  o.maxMessageSize = (opts & 8) ? 4096 : 1 << 20;

  Counter out;
  auto info = std::make_shared<m::ConnectionInfo>();
  info->connectionId = 1;
  info->client = "127.0.0.1:50000";
  info->server = "127.0.0.1:27017";
  m::Tracker tracker(info, out, o);
  m::Clock now{};
  tracker.opened(now);
  std::size_t i = 1;
  while (i + 3 <= size) {
    const std::uint8_t header = data[i];
    std::size_t len = static_cast<std::size_t>(data[i + 1]) | static_cast<std::size_t>(data[i + 2])
                                                                  << 8;
    i += 3;
    if (len > size - i) len = size - i;
    const std::span<const std::uint8_t> chunk(data + i, len);
    i += len;
    if (header & 2) {
      now.mono += std::chrono::microseconds(header);
      now.wall += std::chrono::microseconds(header);
    }
    if (header & 1) {
      tracker.server_data(chunk, now);
    } else {
      tracker.client_data(chunk, now);
    }
  }
  tracker.closed("fuzz: end of input", now);
  tracker.closed("fuzz: closed twice", now);  // idempotent
  if (out.started != out.terminal || out.opened != 1 || out.closed != 1 || !out.closedLast)
    std::abort();
  return 0;
}
