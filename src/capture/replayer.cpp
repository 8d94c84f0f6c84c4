#include "varanus/capture/replayer.hpp"

#include <algorithm>
#include <utility>

#include "varanus/capture/stream.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::capture {

namespace {

std::uint32_t le32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[3]} << 24) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[1]} << 8) |
         p[0];
}

constexpr std::size_t kHeader = 16;

bool known_opcode(std::int32_t op) noexcept {
  return op == 1 || (op >= 2001 && op <= 2007 && op != 2003) || (op >= 2010 && op <= 2013);
}

/// Could a message of this direction start with these bytes?
bool plausible_header(std::span<const std::uint8_t> b, bool fromClient,
                      std::int32_t maxSize) noexcept {
  if (b.size() < kHeader) return false;
  const auto length = static_cast<std::int32_t>(le32(b.data()));
  const auto opCode = static_cast<std::int32_t>(le32(b.data() + 12));
  const auto responseTo = static_cast<std::int32_t>(le32(b.data() + 8));
  if (length <= static_cast<std::int32_t>(kHeader) || length > maxSize) return false;
  switch (opCode) {
    case 2013:  // OP_MSG
    case 2012:  // OP_COMPRESSED
      return fromClient || responseTo != 0;
    case 1:     // OP_REPLY
    case 2011:  // OP_COMMANDREPLY
      return !fromClient && responseTo != 0;
    case 2001:
    case 2002:
    case 2004:
    case 2005:
    case 2006:
    case 2007:
    case 2010:
      return fromClient;
    default:
      return false;
  }
}

}  // namespace

monitor::Clock capture_clock(std::chrono::nanoseconds t) noexcept {
  return {std::chrono::steady_clock::time_point(
              std::chrono::duration_cast<std::chrono::steady_clock::duration>(t)),
          std::chrono::system_clock::time_point(
              std::chrono::duration_cast<std::chrono::system_clock::duration>(t))};
}

struct Replayer::Connection {
  struct Direction final : Stream::Output {
    Connection* c = nullptr;
    bool fromClient = true;
    Stream stream;
    bool synced = false;          ///< the bytes fed next start at a frame boundary
    std::uint64_t remaining = 0;  ///< bytes of the current frame still to come
    std::uint8_t head[kHeader] = {};
    std::size_t headHave = 0;  ///< bytes of the next frame's header seen
    std::uint64_t skip = 0;    ///< bytes to drop before feeding (the rest of a frame)
    std::uint64_t frames = 0;
    bool fin = false;

    explicit Direction(std::size_t maxBuffered) : stream(maxBuffered) {}
    void data(std::span<const std::uint8_t> bytes) override { c->on_data(*this, bytes); }
    void gap(std::uint64_t bytes) override { c->on_gap(*this, bytes); }

    /// Follows frame lengths over bytes about to be fed.
    void follow(std::span<const std::uint8_t> b) {
      std::size_t i = 0;
      while (i < b.size()) {
        if (remaining > 0) {
          const std::size_t n =
              static_cast<std::size_t>(std::min<std::uint64_t>(remaining, b.size() - i));
          remaining -= n;
          i += n;
          continue;
        }
        const std::size_t n = std::min(kHeader - headHave, b.size() - i);
        std::copy_n(b.data() + i, n, head + headHave);
        headHave += n;
        i += n;
        if (headHave < kHeader) break;
        headHave = 0;
        const std::uint32_t length = le32(head);
        remaining = length > kHeader ? length - kHeader : 0;
        ++frames;
        c->on_frame(*this, head);
      }
    }
  };

  Replayer& owner;
  Key key;
  Direction client;
  Direction server;
  std::unique_ptr<monitor::Tracker> tracker;
  std::uint64_t connectionId = 0;
  monitor::Clock now{};
  std::string closeReason;  ///< the first end seen ("client closed", ...)
  bool stopReported = false;
  bool closing = false;
  bool midstreamReported = false;

  Connection(Replayer& o, Key k)
      : owner(o),
        key(std::move(k)),
        client(o.options_.maxBuffered),
        server(o.options_.maxBuffered) {
    client.c = server.c = this;
    client.fromClient = true;
    server.fromClient = false;
  }
  Direction& other(Direction& d) noexcept { return d.fromClient ? server : client; }

  std::string name() const {
    return "connection " + std::to_string(connectionId) + " (" + key.client.to_string() + " -> " +
           key.server.to_string() + ")";
  }

  void open() {
    if (tracker) return;
    connectionId = owner.nextConnectionId_++;
    ++owner.counters_.connections;
    auto info = std::make_shared<monitor::ConnectionInfo>();
    info->connectionId = connectionId;
    info->client = key.client.to_string();
    info->server = key.server.to_string();
    tracker =
        std::make_unique<monitor::Tracker>(std::move(info), owner.out_, owner.options_.tracker);
    tracker->opened(now);
    stopReported = false;
  }

  void end_tracker(std::string_view reason) {
    if (!tracker) return;
    check_stop();
    tracker->closed(reason, now);
    tracker.reset();
  }

  void check_stop() {
    if (!tracker || stopReported || tracker->inspecting()) return;
    stopReported = true;
    ++owner.counters_.decodeStops;
    owner.diag(name() + ": inspection stopped: " + tracker->stop_reason());
  }

  void on_frame(Direction& d, const std::uint8_t* header) {
    const auto opCode = static_cast<std::int32_t>(le32(header + 12));
    if (!known_opcode(opCode)) {
      // The Tracker passes these over in silence (the proxy relays them).
      ++owner.counters_.unknownOpcodes;
      owner.diag(name() + ": a message with unknown opCode " + std::to_string(opCode) + " (" +
                 std::to_string(le32(header)) + " bytes) from the " +
                 (d.fromClient ? "client" : "server") + ": not a command");
    }
    if (d.fromClient || client.frames != 0) return;
    // A reply before any request: the capture missed its request.
    ++owner.counters_.unpairedReplies;
    owner.diag(name() + ": a reply (responseTo " +
               std::to_string(static_cast<std::int32_t>(le32(header + 8))) +
               ") whose request is not in the capture");
  }

  void on_data(Direction& d, std::span<const std::uint8_t> b) {
    if (d.skip > 0) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(d.skip, b.size()));
      d.skip -= n;
      owner.counters_.skippedBytes += n;
      b = b.subspan(n);
      if (b.empty()) return;
    }
    if (!d.synced) {
      if (closing || !plausible_header(b, d.fromClient, owner.options_.tracker.maxMessageSize)) {
        owner.counters_.skippedBytes += b.size();
        return;
      }
      d.synced = true;
      d.remaining = 0;
      d.headHave = 0;
    }
    if (!tracker) {
      if (closing) return;
      open();
      if (d.stream.midstream() && !midstreamReported) {
        midstreamReported = true;
        ++owner.counters_.midstream;
        owner.diag(name() + ": the capture starts mid-stream (no SYN)");
      }
    }
    d.follow(b);
    if (d.fromClient) {
      tracker->client_data(b, now);
    } else {
      tracker->server_data(b, now);
    }
    check_stop();
  }

  void on_gap(Direction& d, std::uint64_t bytes) {
    const std::string what = std::to_string(bytes) + " bytes from the " +
                             (d.fromClient ? "client" : "server") + " missing";
    if (tracker) {
      owner.diag(name() + ": capture gap: " + what + "; resynchronising");
      end_tracker("capture gap: " + what);
    }
    d.synced = false;
    d.skip = 0;
    Direction& o = other(d);
    if (o.synced) {
      if (o.headHave != 0) {
        o.synced = false;  // inside a header: resynchronise on the next one
      } else {
        o.skip = o.remaining;  // the new Tracker starts at the next frame
        o.remaining = 0;
      }
    }
  }
};

Replayer::Replayer(monitor::EventOutput& out, ReplayOptions options)
    : out_(out), options_(std::move(options)) {}

Replayer::~Replayer() = default;

bool Replayer::is_server_port(std::uint16_t port) const noexcept {
  return std::find(options_.ports.begin(), options_.ports.end(), port) != options_.ports.end();
}

void Replayer::diag(const std::string& line) {
  if (options_.diagnostics) options_.diagnostics(line);
}

void Replayer::packet(int linkType, std::chrono::nanoseconds time,
                      std::span<const std::uint8_t> data, std::uint32_t wireLength) {
  ++counters_.packets;
  counters_.bytes += data.size();
  last_ = time;
  const Parsed p = parse_packet(linkType, data, wireLength);
  switch (p.status) {
    case ParseStatus::tcp:
      segment(p.segment, time);
      return;
    case ParseStatus::fragment:
      ++counters_.fragments;
      return;
    case ParseStatus::truncated:
    case ParseStatus::malformed:
    case ParseStatus::unsupported:
      ++counters_.badPackets;
      return;
    case ParseStatus::notTcp:
      ++counters_.otherTraffic;
      return;
  }
}

void Replayer::close(Connection& c, std::string_view reason, monitor::Clock now) {
  c.now = now;
  c.closing = true;
  c.client.stream.flush(c.client);
  c.server.stream.flush(c.server);
  c.end_tracker(reason);
}

void Replayer::erase(const Key& key) {
  auto it = connections_.find(key);
  if (it == connections_.end()) return;
  for (const auto* d : {&it->second->client, &it->second->server}) {
    const auto& k = d->stream.counters();
    counters_.duplicateBytes += k.duplicate;
    counters_.outOfOrder += k.outOfOrder;
    counters_.gaps += k.gaps;
    counters_.gapBytes += k.gapBytes;
  }
  connections_.erase(it);
}

void Replayer::segment(const Segment& s, std::chrono::nanoseconds time) {
  last_ = time;
  bool fromClient;
  if (is_server_port(s.dst.port) &&
      !(is_server_port(s.src.port) && s.has(tcp_flags::ack) && s.has(tcp_flags::syn))) {
    fromClient = true;
  } else if (is_server_port(s.src.port)) {
    fromClient = false;
  } else {
    ++counters_.otherTraffic;
    return;
  }
  ++counters_.tcpSegments;
  const Key key = fromClient ? Key{s.src, s.dst} : Key{s.dst, s.src};
  const monitor::Clock now = capture_clock(time);
  const bool syn = s.has(tcp_flags::syn);
  auto it = connections_.find(key);
  if (syn && fromClient && !s.has(tcp_flags::ack) && it != connections_.end()) {
    Connection& old = *it->second;
    const bool retransmitted = old.client.stream.started() && !old.client.stream.midstream() &&
                               old.client.stream.next_seq() == s.seq + 1 && old.client.frames == 0;
    if (!retransmitted) {
      close(old, "connection reused by a new SYN", now);
      erase(key);
      it = connections_.end();
    }
  }
  if (it == connections_.end()) {
    // Only a SYN or data opens a connection: stray ACKs and FINs of a
    // connection already closed do not.
    if (!syn && s.payload.empty()) return;
    it = connections_.emplace(key, std::make_unique<Connection>(*this, key)).first;
  }
  Connection& c = *it->second;
  c.now = now;
  Connection::Direction& d = fromClient ? c.client : c.server;
  Connection::Direction& o = fromClient ? c.server : c.client;
  if (syn) {
    if (!d.stream.started()) {
      d.stream.syn(s.seq);
      d.synced = true;
    }
    if (fromClient && !s.has(tcp_flags::ack)) c.open();  // connectionOpened at the SYN
  }
  const std::uint32_t seq = syn ? s.seq + 1 : s.seq;
  // The acknowledgement first: it tells what the sender had received before
  // it sent this payload, so a gap it reveals in the other direction comes
  // before this payload (a request sent after a lost reply belongs to the
  // Tracker that resynchronises, not to the one the gap ends).
  if (s.has(tcp_flags::ack) && !o.fin) o.stream.acked(s.ack, o);
  if (!s.payload.empty()) d.stream.segment(seq, s.payload, d);
  if (s.has(tcp_flags::rst)) {
    // The proxy says the same of a reset socket (its strerror(ECONNRESET)).
    // A FIN before it was the first cause (the proxy names the first one).
    if (c.closeReason.empty())
      c.closeReason = fromClient ? "client reset: Connection reset by peer"
                                 : "upstream reset: Connection reset by peer";
    close(c, c.closeReason, now);
    erase(key);
    return;
  }
  if (s.has(tcp_flags::fin) && !d.fin) {
    d.fin = true;
    d.stream.flush(d);
    if (c.closeReason.empty()) c.closeReason = fromClient ? "client closed" : "upstream closed";
    if (o.fin) {
      close(c, c.closeReason, now);
      erase(key);
    }
  }
}

void Replayer::finish(std::chrono::nanoseconds time) {
  const monitor::Clock now = capture_clock(time);
  // Closed in the order they were numbered, so output does not depend on hashing.
  std::vector<std::pair<std::uint64_t, Key>> open;
  for (const auto& [key, c] : connections_) open.emplace_back(c->connectionId, key);
  std::sort(open.begin(), open.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [id, key] : open) {
    close(*connections_.at(key), "end of capture", now);
    erase(key);
  }
}

}  // namespace varanus::capture
