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
#include "varanus/wire/sparse.hpp"

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
///
/// With a sparse budget, an OP_MSG frame longer than 4 x budget that has to
/// be buffered is reduced as it streams in instead (sparse.hpp): what is
/// handed out is a smaller valid frame (Next::reduced), and what the frame
/// holds past the budget is never copied. Other opcodes (OP_COMPRESSED,
/// legacy) are buffered whole as before.
class FrameReader {
 public:
  explicit FrameReader(std::int32_t maxMessageSize = kDefaultMaxMessageSize,
                       std::size_t sparseBudget = 0);

  /// Takes the next bytes of the stream. They are not copied yet: they must
  /// stay valid until next() has returned need_more (or error), which is
  /// when whatever is left of them is buffered. After an error, input is
  /// ignored.
  void feed(std::span<const std::uint8_t> bytes);

  struct Next {
    FrameStatus status = FrameStatus::need_more;
    std::span<const std::uint8_t> frame;  ///< valid until the next feed() or next()
    std::optional<Error> error;           ///< offset is relative to the stream start
    bool reduced = false;                 ///< a sparse frame that left something out (see above)
  };
  /// The next complete frame, need_more, or the (sticky) error.
  Next next();

  /// Bytes of the stream handed out as frames so far.
  std::uint64_t consumed() const noexcept { return consumed_; }
  /// Bytes given but not yet part of a returned frame.
  std::size_t buffered() const noexcept {
    return buf_.size() - start_ + in_.size() + (sparse_ ? sparse_->frame().size() : 0);
  }
  /// Frames reduced (sparse) so far.
  std::uint64_t sparse_frames() const noexcept { return sparseFrames_; }
  bool failed() const noexcept { return error_.has_value(); }

 private:
  Next fail(const FrameCheck& fc);
  void compact();            // drops what was handed out from buf_
  void stash();              // copies the unread input into buf_
  void take(std::size_t n);  // moves up to n bytes of input into buf_
  bool sparse_eligible(std::uint32_t length) const noexcept;
  Next start_sparse(std::span<const std::uint8_t> first, std::uint32_t length);
  Next next_sparse();

  std::int32_t max_;
  std::vector<std::uint8_t> buf_;     // input kept for later: a frame that continues in later input
  std::size_t start_ = 0;             // buf_[0, start_) is the frame next() returned last
  std::span<const std::uint8_t> in_;  // fed, not yet looked at
  std::uint64_t consumed_ = 0;
  std::optional<Error> error_;
  std::size_t sparseBudget_ = 0;
  std::optional<SparseMsg> sparse_;  // the frame being reduced, or the one handed out
  std::uint32_t sparseLength_ = 0;
  std::uint64_t sparseFrames_ = 0;
};

}  // namespace varanus::wire
