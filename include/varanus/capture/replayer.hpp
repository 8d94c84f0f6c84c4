// varanus::capture — the Replayer: captured packets in, the live proxy's
// events out.
//
//   packet ─▶ parse_packet ─▶ Connection (by client/server address pair)
//                               two Streams (stream.hpp) ─▶ framing check ─▶ monitor::Tracker
//
// Which end is the server: the end whose port is one of `ports`. Each TCP
// connection gets its own Tracker, exactly as a proxied connection does,
// with the capture's timestamps as its clock (`t` from the packet time,
// durations from packet times). connectionOpened at the SYN (or the first
// packet seen), connectionClosed at the FIN of both ends, at an RST, or at
// finish() (end of capture).
//
// Missing bytes: a Tracker cannot skip bytes, so when a direction has a gap
// the connection's Tracker is closed ("capture gap: ..."; its pending
// commands fail with that message) and a new one, with a new connection
// number, takes over: the direction with the gap resumes at the next
// segment that starts with a plausible message header, the other one at
// its next frame boundary (the Replayer follows frame lengths both ways).
// A capture that starts mid-stream resynchronises the same way.
//
// Pure (no I/O): tests feed packets as bytes. Bounded memory: per open
// connection, the Streams' out-of-order bytes (maxBuffered each) and what
// the Tracker buffers of an incomplete frame.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "varanus/capture/packet.hpp"
#include "varanus/monitor/event.hpp"
#include "varanus/monitor/tracker.hpp"

namespace varanus::capture {

struct ReplayOptions {
  /// Server ports: a TCP connection with one end on one of them is MongoDB.
  std::vector<std::uint16_t> ports{27017};
  monitor::TrackerOptions tracker;
  /// Out-of-order bytes a direction may hold while waiting for a missing segment.
  std::size_t maxBuffered = 4u << 20;
  /// Where notes about the capture go (mid-stream starts, gaps, decode
  /// errors), one line each without newline. Empty: dropped.
  std::function<void(std::string_view)> diagnostics;
};

struct ReplayCounters {
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;           ///< captured bytes of every packet
  std::uint64_t tcpSegments = 0;     ///< TCP segments of a MongoDB port
  std::uint64_t otherTraffic = 0;    ///< non-TCP packets, TCP of other ports
  std::uint64_t fragments = 0;       ///< IP fragments (skipped)
  std::uint64_t badPackets = 0;      ///< truncated or malformed headers
  std::uint64_t connections = 0;     ///< Trackers created (connection numbers given)
  std::uint64_t midstream = 0;       ///< connections whose start the capture missed
  std::uint64_t duplicateBytes = 0;  ///< retransmitted / duplicated payload
  std::uint64_t outOfOrder = 0;      ///< segments that arrived early
  std::uint64_t gaps = 0;            ///< places where bytes are missing
  std::uint64_t gapBytes = 0;
  std::uint64_t skippedBytes = 0;     ///< bytes skipped while looking for a message header
  std::uint64_t unpairedReplies = 0;  ///< replies whose request is not in the capture
  std::uint64_t decodeStops = 0;      ///< connections whose inspection stopped on a bad message
  std::uint64_t unknownOpcodes = 0;   ///< messages with an opCode MongoDB does not have
};

/// A capture timestamp as the Tracker's clock.
monitor::Clock capture_clock(std::chrono::nanoseconds sinceEpoch) noexcept;

class Replayer {
 public:
  Replayer(monitor::EventOutput& out, ReplayOptions options);
  ~Replayer();
  Replayer(const Replayer&) = delete;
  Replayer& operator=(const Replayer&) = delete;

  /// One captured packet: its link type, time, captured bytes and length on the wire.
  void packet(int linkType, std::chrono::nanoseconds time, std::span<const std::uint8_t> data,
              std::uint32_t wireLength);
  /// A parsed segment (packet() calls it; tests may too).
  void segment(const Segment& s, std::chrono::nanoseconds time);
  /// End of capture: every open connection is flushed and closed ("end of capture").
  void finish(std::chrono::nanoseconds time);
  /// finish() at the time of the last packet.
  void finish() { finish(last_); }

  const ReplayCounters& counters() const noexcept { return counters_; }
  std::size_t open_connections() const noexcept { return connections_.size(); }

  struct Connection;  // replayer.cpp

 private:
  struct Key {
    Address client;
    Address server;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
      AddressHash h;
      return h(k.client) * 31 + h(k.server);
    }
  };
  bool is_server_port(std::uint16_t port) const noexcept;
  void close(Connection& c, std::string_view reason, monitor::Clock now);
  void erase(const Key& key);
  void diag(const std::string& line);
  friend struct Connection;

  monitor::EventOutput& out_;
  ReplayOptions options_;
  ReplayCounters counters_;
  std::chrono::nanoseconds last_{0};
  std::uint64_t nextConnectionId_ = 1;
  std::unordered_map<Key, std::unique_ptr<Connection>, KeyHash> connections_;
};

}  // namespace varanus::capture
