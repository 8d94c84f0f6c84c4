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

/// Splits a byte stream into frames. Copies only what it must: frames that
/// lie whole in the bytes given to feed() are handed out in place; only the
/// start of a frame that continues in a later feed() is buffered (and a
/// buffer grown for a large frame is released once that frame is handed out,
/// so a connection that once carried 48 MB does not keep 48 MB).
class FrameReader {
 public:
  explicit FrameReader(std::int32_t maxMessageSize = kDefaultMaxMessageSize);

  /// Takes the next bytes of the stream. They are not copied yet: they must
  /// stay valid until next() has returned need_more (or error), which is
  /// when whatever is left of them is buffered. After an error, input is
  /// ignored.
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
  /// Bytes given but not yet part of a returned frame.
  std::size_t buffered() const noexcept { return buf_.size() - start_ + in_.size(); }
  bool failed() const noexcept { return error_.has_value(); }

 private:
  Next fail(const FrameCheck& fc);
  void compact();            // drops what was handed out from buf_
  void stash();              // copies the unread input into buf_
  void take(std::size_t n);  // moves up to n bytes of input into buf_

  std::int32_t max_;
  std::vector<std::uint8_t> buf_;     // input kept for later: a frame that continues in later input
  std::size_t start_ = 0;             // buf_[0, start_) is the frame next() returned last
  std::span<const std::uint8_t> in_;  // fed, not yet looked at
  std::uint64_t consumed_ = 0;
  std::optional<Error> error_;
};

}  // namespace varanus::wire
