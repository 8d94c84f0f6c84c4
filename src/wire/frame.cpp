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

namespace {
// A buffer grown past this for one large frame is released after it.
constexpr std::size_t kKeepCapacity = 64 * 1024;
}  // namespace

FrameReader::FrameReader(std::int32_t maxMessageSize) : max_(maxMessageSize) {}

void FrameReader::feed(std::span<const std::uint8_t> bytes) {
  if (error_ || bytes.empty()) return;
  if (!in_.empty()) stash();  // fed twice without draining: keep the first
  in_ = bytes;
  // A bad length fails the stream at once, before anything of it is kept.
  const std::size_t have = buf_.size() - start_;
  if (have < 4 && have + in_.size() >= 4) {
    std::uint8_t prefix[4];
    for (std::size_t i = 0; i < 4; ++i) prefix[i] = i < have ? buf_[start_ + i] : in_[i - have];
    const FrameCheck fc = check_frame({prefix, 4}, max_);
    if (fc.status == FrameStatus::error) fail(fc);
  }
}

void FrameReader::compact() {
  if (start_ == 0) return;
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start_));
  start_ = 0;
  if (buf_.empty() && buf_.capacity() > kKeepCapacity) buf_.shrink_to_fit();
}

void FrameReader::stash() {
  compact();
  buf_.insert(buf_.end(), in_.begin(), in_.end());
  in_ = {};
}

void FrameReader::take(std::size_t n) {
  n = std::min(n, in_.size());
  buf_.insert(buf_.end(), in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(n));
  in_ = in_.subspan(n);
}

FrameReader::Next FrameReader::fail(const FrameCheck& fc) {
  error_ = fc.error;
  error_->offset += consumed_;
  buf_.clear();
  buf_.shrink_to_fit();
  start_ = 0;
  in_ = {};
  Next n;
  n.status = FrameStatus::error;
  n.error = error_;
  return n;
}

FrameReader::Next FrameReader::next() {
  Next n;
  if (error_) {
    n.status = FrameStatus::error;
    n.error = error_;
    return n;
  }
  compact();  // the frame handed out last time is done with
  if (!buf_.empty()) {
    // Complete the buffered frame from the input: its length prefix first,
    // then exactly the rest of it.
    if (buf_.size() < 4) take(4 - buf_.size());
    if (buf_.size() < 4) return n;
    const FrameCheck fc = check_frame({buf_.data(), 4}, max_);
    if (fc.status == FrameStatus::error) return fail(fc);
    if (buf_.size() < fc.length) {
      if (buf_.capacity() < fc.length) buf_.reserve(fc.length);
      take(fc.length - buf_.size());
      if (buf_.size() < fc.length) return n;
    }
    n.status = FrameStatus::frame;
    n.frame = {buf_.data(), fc.length};
    start_ = fc.length;
    consumed_ += fc.length;
    return n;
  }
  if (in_.empty()) return n;
  // Nothing buffered: hand out frames in place.
  const FrameCheck fc = check_frame(in_, max_);
  switch (fc.status) {
    case FrameStatus::error:
      return fail(fc);
    case FrameStatus::frame:
      n.status = FrameStatus::frame;
      n.frame = in_.first(fc.length);
      in_ = in_.subspan(fc.length);
      consumed_ += fc.length;
      return n;
    case FrameStatus::need_more:
      // A frame that continues in later input: buffer its start, with room
      // for all of it when the length is known (checked against the maximum
      // already, so nothing oversized is ever allocated).
      if (fc.length != 0 && buf_.capacity() < fc.length) buf_.reserve(fc.length);
      stash();
      return n;
  }
  return n;
}

}  // namespace varanus::wire
