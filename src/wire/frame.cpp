// Incremental framing: buffer a byte stream, hand out whole frames. The
// length prefix is checked as soon as its 4 bytes are in, so an oversized
// or undersized frame is refused before its body is buffered.
#include "varanus/wire/frame.hpp"

#include <string>

#include "bytes.hpp"

namespace varanus::wire {

FrameCheck check_frame(std::span<const std::uint8_t> buffered,
                       std::int32_t maxMessageSize) noexcept {
  FrameCheck r;
  if (buffered.size() < 4) return r;
  const std::int32_t len = detail::load_i32(buffered.data());
  if (len <= static_cast<std::int32_t>(kHeaderSize) || len > maxMessageSize) {
    r.status = FrameStatus::error;
    try {
      if (len <= static_cast<std::int32_t>(kHeaderSize)) {
        r.error =
            Error{Errc::length_too_small, 0, "messageLength " + std::to_string(len) + " <= 16"};
      } else {
        r.error = Error{Errc::length_too_large, 0,
                        "messageLength " + std::to_string(len) + " > maximum " +
                            std::to_string(maxMessageSize)};
      }
    } catch (...) {  // only std::bad_alloc; keep the code without its text
      r.error = Error{len <= 16 ? Errc::length_too_small : Errc::length_too_large, 0, {}};
    }
    return r;
  }
  r.length = static_cast<std::uint32_t>(len);
  r.status = buffered.size() >= r.length ? FrameStatus::frame : FrameStatus::need_more;
  return r;
}

FrameReader::FrameReader(std::int32_t maxMessageSize) : max_(maxMessageSize) {}

void FrameReader::feed(std::span<const std::uint8_t> bytes) {
  if (error_ || bytes.empty()) return;
  // Frames handed out so far stay valid only until this call: drop them now.
  if (start_ > 0) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start_));
    start_ = 0;
  }
  // Before buffering, look at the pending frame's length: a bad one fails
  // the stream at once, and a good one tells how much room it needs.
  std::size_t take = bytes.size();
  if (buf_.size() < 4) {
    std::uint8_t prefix[4] = {};
    const std::size_t have = buf_.size();
    const std::size_t n = std::min<std::size_t>(4 - have, bytes.size());
    for (std::size_t i = 0; i < have; ++i) prefix[i] = buf_[i];
    for (std::size_t i = 0; i < n; ++i) prefix[have + i] = bytes[i];
    if (have + n == 4) {
      const FrameCheck fc = check_frame({prefix, 4}, max_);
      if (fc.status == FrameStatus::error) {
        error_ = fc.error;
        error_->offset += consumed_;
        buf_.clear();
        buf_.shrink_to_fit();
        return;
      }
      if (buf_.capacity() < fc.length) buf_.reserve(fc.length);
    }
  }
  buf_.insert(buf_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
}

FrameReader::Next FrameReader::next() {
  Next n;
  if (error_) {
    n.status = FrameStatus::error;
    n.error = error_;
    return n;
  }
  const std::span<const std::uint8_t> pending(buf_.data() + start_, buf_.size() - start_);
  const FrameCheck fc = check_frame(pending, max_);
  switch (fc.status) {
    case FrameStatus::need_more:
      return n;
    case FrameStatus::error:
      error_ = fc.error;
      error_->offset += consumed_;
      buf_.clear();
      start_ = 0;
      n.status = FrameStatus::error;
      n.error = error_;
      return n;
    case FrameStatus::frame:
      n.status = FrameStatus::frame;
      n.frame = pending.first(fc.length);
      start_ += fc.length;
      consumed_ += fc.length;
      return n;
  }
  return n;
}

}  // namespace varanus::wire
