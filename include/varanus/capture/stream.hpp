// varanus::capture — one direction of a TCP connection, put back in order.
//
// Segments arrive as captured: retransmitted, duplicated, overlapping, out
// of order, or missing. The Stream hands out each byte of the stream once,
// in order, and says where bytes are missing (a gap) instead of waiting for
// them forever:
//   - a segment wholly before the next expected byte is a duplicate;
//   - one overlapping it gives only its new bytes;
//   - one after it waits (out of order) until the bytes before it arrive;
//   - a gap is declared when the peer acknowledges bytes the capture never
//     saw (ACK beyond the next expected byte), when the bytes waiting pass
//     `maxBuffered`, or at flush() (FIN, RST, end of capture).
// Pure: no I/O. Sequence numbers wrap (32-bit); offsets are 64-bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

namespace varanus::capture {

class Stream {
 public:
  /// Where the ordered bytes go.
  class Output {
   public:
    virtual ~Output() = default;
    virtual void data(std::span<const std::uint8_t> bytes) = 0;
    /// `bytes` of the stream are missing before the next data().
    virtual void gap(std::uint64_t bytes) = 0;
  };

  struct Counters {
    std::uint64_t delivered = 0;   ///< bytes handed out
    std::uint64_t duplicate = 0;   ///< bytes received again (retransmissions, duplicates)
    std::uint64_t outOfOrder = 0;  ///< segments that arrived before bytes preceding them
    std::uint64_t gaps = 0;
    std::uint64_t gapBytes = 0;
  };

  explicit Stream(std::size_t maxBuffered = 4u << 20) : maxBuffered_(maxBuffered) {}

  /// A SYN with this sequence number: the stream starts at isn + 1.
  void syn(std::uint32_t isn) noexcept;
  /// True once the start of the stream is known (SYN or first data).
  bool started() const noexcept { return started_; }
  /// True when the stream started without its SYN (the capture began mid-stream).
  bool midstream() const noexcept { return midstream_; }

  /// A segment's payload at sequence number `seq`. Before the stream has
  /// started, the first data starts it (mid-stream).
  void segment(std::uint32_t seq, std::span<const std::uint8_t> payload, Output& out);
  /// The peer acknowledged everything before `ack`.
  void acked(std::uint32_t ack, Output& out);
  /// Hands out whatever waits, declaring the gaps before it.
  void flush(Output& out);

  /// The next sequence number expected.
  std::uint32_t next_seq() const noexcept { return nextSeq_; }
  std::size_t buffered() const noexcept { return bufferedBytes_; }
  const Counters& counters() const noexcept { return counters_; }

 private:
  /// 64-bit offset of a sequence number near the next expected one.
  std::int64_t offset_of(std::uint32_t seq) const noexcept {
    return static_cast<std::int64_t>(next_) + static_cast<std::int32_t>(seq - nextSeq_);
  }
  void deliver(std::span<const std::uint8_t> bytes, Output& out);
  void skip_to(std::uint64_t offset, Output& out);
  void drain(Output& out);

  std::size_t maxBuffered_;
  bool started_ = false;
  bool midstream_ = false;
  std::uint64_t next_ = 0;  ///< offset of the next byte expected
  std::uint32_t nextSeq_ = 0;
  std::map<std::uint64_t, std::vector<std::uint8_t>> waiting_;  ///< by offset
  std::size_t bufferedBytes_ = 0;
  Counters counters_;
};

}  // namespace varanus::capture
