// Incremental framing: buffer a byte stream, hand out whole frames. The
// length prefix is checked as soon as its 4 bytes are in, so an oversized
// or undersized frame is refused before its body is buffered.
#include "varanus/wire/frame.hpp"

#include <algorithm>
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

FrameReader::FrameReader(std::int32_t maxMessageSize, std::size_t sparseBudget)
    : max_(maxMessageSize), sparseBudget_(sparseBudget) {}

bool FrameReader::sparse_eligible(std::uint32_t length) const noexcept {
  return sparseBudget_ != 0 && length / 4 > sparseBudget_;
}

namespace {
bool is_op_msg(const std::uint8_t* header) noexcept {
  return detail::load_i32(header + 12) == static_cast<std::int32_t>(OpCode::msg);
}
}  // namespace

FrameReader::Next FrameReader::start_sparse(std::span<const std::uint8_t> first,
                                            std::uint32_t length) {
  sparse_.emplace(sparseBudget_);
  sparseLength_ = length;
  sparse_->feed(first);
  return next_sparse();
}

FrameReader::Next FrameReader::next_sparse() {
  Next n;
  // Bytes of the frame may wait in buf_ (fed twice without next()), then in_.
  auto pull = [this](std::span<const std::uint8_t> src) {
    const std::uint64_t left = sparseLength_ - sparse_->position();
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(left, src.size()));
    if (k != 0) sparse_->feed(src.first(k));
    return k;
  };
  if (!buf_.empty()) {
    const std::size_t k = pull(buf_);
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(k));
  }
  in_ = in_.subspan(pull(in_));
  if (!sparse_->failed() && sparse_->position() < sparseLength_) return n;  // more to come
  if (sparse_->failed() || !sparse_->done()) {
    FrameCheck fc;
    fc.status = FrameStatus::error;
    try {
      fc.error = Error{
          Errc::section_overrun, 0,
          sparse_->failed() ? sparse_->error() : "sparse OP_MSG: the frame ends inside a section"};
    } catch (...) {
      fc.error = Error{Errc::section_overrun, 0, {}};
    }
    sparse_.reset();
    return fail(fc);
  }
  n.status = FrameStatus::frame;
  n.frame = sparse_->frame();
  n.reduced = sparse_->reduced();
  consumed_ += sparseLength_;
  ++sparseFrames_;
  return n;
}

void FrameReader::feed(std::span<const std::uint8_t> bytes) {
  if (error_ || bytes.empty()) return;
  if (!in_.empty()) stash();  // fed twice without draining: keep the first
  in_ = bytes;
  // A bad length fails the stream at once, before anything of it is kept
  // (bytes that continue a sparse frame are not the start of one).
  const std::size_t have = buf_.size() - start_;
  if (!(sparse_ && !sparse_->done()) && have < 4 && have + in_.size() >= 4) {
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
  if (sparse_ && sparse_->done()) sparse_.reset();  // handed out last time
  compact();                                        // the frame handed out last time is done with
  if (sparse_) return next_sparse();
  if (!buf_.empty()) {
    // Complete the buffered frame from the input: its length prefix first,
    // then exactly the rest of it.
    if (buf_.size() < 4) take(4 - buf_.size());
    if (buf_.size() < 4) return n;
    const FrameCheck fc = check_frame({buf_.data(), 4}, max_);
    if (fc.status == FrameStatus::error) return fail(fc);
    if (buf_.size() < fc.length) {
      if (sparse_eligible(fc.length)) {
        if (buf_.size() < kHeaderSize + 4) take(kHeaderSize + 4 - buf_.size());
        if (buf_.size() < kHeaderSize + 4) return n;
        if (is_op_msg(buf_.data())) {
          std::vector<std::uint8_t> head;
          head.swap(buf_);
          return start_sparse(head, fc.length);
        }
      }
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
      // A large OP_MSG: reduced as it streams in, never buffered whole.
      if (fc.length != 0 && sparse_eligible(fc.length) && in_.size() >= kHeaderSize + 4 &&
          is_op_msg(in_.data())) {
        const auto first = in_;
        in_ = {};
        return start_sparse(first, fc.length);
      }
      // A frame that continues in later input: buffer its start, with room
      // for all of it when the length is known (checked against the maximum
      // already, so nothing oversized is ever allocated). A frame that may
      // go sparse gets its room once its opcode is known.
      if (fc.length != 0 && !sparse_eligible(fc.length) && buf_.capacity() < fc.length)
        buf_.reserve(fc.length);
      stash();
      return n;
  }
  return n;
}

}  // namespace varanus::wire
