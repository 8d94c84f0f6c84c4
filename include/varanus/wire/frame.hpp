// varanus::wire — incremental framing. Feed bytes in any chunking; get whole
// frames, "need more", or an error. The length is checked before any
// allocation: a frame declaring more than maxMessageSize is rejected at
// once, having buffered nothing of it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "varanus/wire/message.hpp"

namespace varanus::wire {

enum class FrameStatus { frame, need_more, error };

/// Stateless check of a buffer that starts at a frame boundary.
struct FrameCheck {
  FrameStatus status = FrameStatus::need_more;
  std::uint32_t length = 0;  ///< the frame's messageLength when status == frame or known
  std::optional<Error> error;
};
/// Looks at the first bytes of `buffered`: error if the length field is out
/// of range (<= 16 or > maxMessageSize), frame when all `length` bytes are
/// there, else need_more (length set once the 4-byte prefix is known).
FrameCheck check_frame(std::span<const std::uint8_t> buffered,
                       std::int32_t maxMessageSize = kDefaultMaxMessageSize) noexcept;

/// Buffers a byte stream and splits it into frames.
class FrameReader {
 public:
  explicit FrameReader(std::int32_t maxMessageSize = kDefaultMaxMessageSize);

  /// Appends bytes. After an error, further input is ignored.
  void feed(std::span<const std::uint8_t> bytes);

  struct Next {
    FrameStatus status = FrameStatus::need_more;
    std::span<const std::uint8_t> frame;  ///< valid until the next feed() or next()
    std::optional<Error> error;           ///< offset is relative to the stream start
  };
  /// The next complete frame, need_more, or the (sticky) error.
  Next next();

  /// Bytes of the stream handed out as frames so far.
  std::uint64_t consumed() const noexcept { return consumed_; }
  /// Bytes buffered but not yet part of a returned frame.
  std::size_t buffered() const noexcept { return buf_.size() - start_; }
  bool failed() const noexcept { return error_.has_value(); }

 private:
  std::int32_t max_;
  std::vector<std::uint8_t> buf_;
  std::size_t start_ = 0;      // first unconsumed byte in buf_
  std::uint64_t consumed_ = 0;
  std::optional<Error> error_;
};

}  // namespace varanus::wire
