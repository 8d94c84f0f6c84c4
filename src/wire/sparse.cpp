// Sparse framing (sparse.hpp): a streaming walk over an OP_MSG frame that
// copies what it keeps and skips the rest. Every step parses the few bytes
// of a header at the current position and decides; the value bytes then
// flow through a pending copy or skip without being looked at.
#include "varanus/wire/sparse.hpp"

#include <algorithm>
#include <cstring>

#include "bytes.hpp"
#include "varanus/wire/bson_walk.hpp"
#include "varanus/wire/compression.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::wire {

namespace {
constexpr std::size_t kMaxHeader = 64 * 1024;  // a key or regex longer than this fails
constexpr std::size_t kCarryStep = 4096;       // bytes added to a split header at a time
// Nesting is bounded like every walker's (bson_walk.hpp).
constexpr std::size_t kMaxDepth = static_cast<std::size_t>(kMaxBsonDepth);
constexpr std::size_t kCutFloor = 1024;  // a value cut at the budget keeps at least this

void put_u32(std::vector<std::uint8_t>& out, std::size_t at, std::uint64_t v) {
  detail::store_u32(out.data() + at, static_cast<std::uint32_t>(v));
}

const std::uint8_t* find_nul(const std::uint8_t* p, std::size_t n) {
  return static_cast<const std::uint8_t*>(std::memchr(p, 0, n));
}

// Bytes at the end of `s` (after `from`) that are an incomplete UTF-8
// sequence: what a cut in the middle of a character leaves.
std::size_t incomplete_utf8_tail(const std::vector<std::uint8_t>& s, std::size_t from) {
  std::size_t i = s.size();
  std::size_t cont = 0;
  while (i > from && cont < 3 && (s[i - 1] & 0xC0) == 0x80) {
    --i;
    ++cont;
  }
  if (i == from) return 0;
  const std::uint8_t lead = s[i - 1];
  std::size_t want = 1;
  if ((lead & 0xE0) == 0xC0)
    want = 2;
  else if ((lead & 0xF0) == 0xE0)
    want = 3;
  else if ((lead & 0xF8) == 0xF0)
    want = 4;
  return cont + 1 < want ? cont + 1 : 0;
}
}  // namespace

SparseMsg::SparseMsg(std::size_t budget, std::size_t small, std::size_t cap)
    : budget_(budget), small_(small), cap_(cap != 0 ? cap : budget + 1024 * 1024) {
  out_.reserve(std::min<std::size_t>(budget_ + 4096, cap_));
}

std::ptrdiff_t SparseMsg::fail(std::string why) {
  mode_ = Mode::failed;
  error_ = "sparse OP_MSG at byte " + std::to_string(pos_) + ": " + std::move(why);
  out_.clear();
  out_.shrink_to_fit();
  carry_.clear();
  stack_.clear();
  return -1;
}

void SparseMsg::open(Level level, std::uint64_t end) {
  stack_.push_back(Open{level, out_.size(), end});
  out_.resize(out_.size() + 4);  // the length, written when it closes
}

void SparseMsg::close_top() {
  const Open o = stack_.back();
  stack_.pop_back();
  put_u32(out_, o.lenAt, out_.size() - o.lenAt);
}

void SparseMsg::finish_pending() {
  switch (then_) {
    case Then::nothing:
      break;
    case Then::finish_string:
      out_.resize(out_.size() - incomplete_utf8_tail(out_, thenAt_ + 4));
      out_.push_back(0);
      put_u32(out_, thenAt_, out_.size() - thenAt_ - 4);
      break;
    case Then::finish_binary:
      put_u32(out_, thenAt_, out_.size() - thenAt_ - 5);
      break;
    case Then::finish_frame:
      put_u32(out_, 0, out_.size());
      mode_ = Mode::done;
      out_.shrink_to_fit();
      break;
  }
  then_ = Then::nothing;
}

void SparseMsg::feed(std::span<const std::uint8_t> bytes) {
  for (;;) {
    if (mode_ != Mode::parse) return;
    if (copyLeft_ != 0 || skipLeft_ != 0) {
      if (bytes.empty()) return;
      std::uint64_t& left = copyLeft_ != 0 ? copyLeft_ : skipLeft_;
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, bytes.size()));
      if (&left == &copyLeft_) out_.insert(out_.end(), bytes.begin(), bytes.begin() + n);
      left -= n;
      pos_ += n;
      bytes = bytes.subspan(n);
      continue;
    }
    if (then_ != Then::nothing) {
      finish_pending();
      continue;
    }
    std::size_t added = 0;
    const std::uint8_t* p = bytes.data();
    std::size_t n = bytes.size();
    if (!carry_.empty()) {
      added = std::min(bytes.size(), kCarryStep);
      carry_.insert(carry_.end(), bytes.begin(), bytes.begin() + added);
      p = carry_.data();
      n = carry_.size();
    }
    const std::ptrdiff_t r = step(p, n);
    if (mode_ == Mode::failed) return;
    if (r < 0) {  // the header goes on in later bytes
      if (carry_.empty()) {
        if (bytes.empty()) return;
        carry_.assign(bytes.begin(), bytes.end());
        bytes = {};
      } else {
        bytes = bytes.subspan(added);
        if (added == 0) return;
      }
      if (carry_.size() > kMaxHeader) {
        fail("a header longer than " + std::to_string(kMaxHeader) + " bytes");
        return;
      }
      continue;
    }
    const auto used = static_cast<std::size_t>(r);
    pos_ += used;
    if (carry_.empty()) {
      bytes = bytes.subspan(used);
    } else {
      // A step after a split header always consumes all of the earlier
      // part: it needed more than that to decide, and consumes what it read.
      const std::size_t old = carry_.size() - added;
      bytes = bytes.subspan(used - old);
      carry_.clear();
    }
  }
}

std::ptrdiff_t SparseMsg::step(const std::uint8_t* p, std::size_t n) {
  if (stack_.empty()) {
    if (length_ != 0) return fail("bytes after the frame");  // not reached: the caller frames
    return step_frame(p, n);
  }
  switch (stack_.back().level) {
    case Level::frame:
      return step_frame(p, n);
    case Level::sequence:
      return step_sequence(p, n);
    case Level::document:
    case Level::array:
      return step_document(p, n);
  }
  return fail("bad state");
}

std::ptrdiff_t SparseMsg::keep(const std::uint8_t* p, std::size_t parsed, std::uint64_t total) {
  if (exhausted_ && out_.size() + total > cap_)
    return fail("more than " + std::to_string(cap_) + " bytes kept (small fields after the first " +
                std::to_string(budget_) + ")");
  out_.insert(out_.end(), p, p + parsed);
  copyLeft_ = total - parsed;
  return static_cast<std::ptrdiff_t>(parsed);
}

std::ptrdiff_t SparseMsg::drop(std::size_t parsed, std::uint64_t total) {
  reduced_ = true;
  skipLeft_ = total - parsed;
  return static_cast<std::ptrdiff_t>(parsed);
}

std::ptrdiff_t SparseMsg::descend(const std::uint8_t* p, std::size_t header, Level level,
                                  std::uint64_t total) {
  if (stack_.size() >= kMaxDepth) return fail("nested deeper than " + std::to_string(kMaxDepth));
  out_.insert(out_.end(), p, p + header);
  open(level, pos_ + total);
  return static_cast<std::ptrdiff_t>(header + 4);
}

std::ptrdiff_t SparseMsg::step_frame(const std::uint8_t* p, std::size_t n) {
  if (stack_.empty()) {
    // The header and flagBits.
    if (n < kHeaderSize + 4) return -1;
    const std::uint32_t len = detail::load_u32(p);
    const std::int32_t op = detail::load_i32(p + 12);
    const std::uint32_t flags = detail::load_u32(p + 16);
    if (op != static_cast<std::int32_t>(OpCode::msg)) return fail("not an OP_MSG");
    checksum_ = (flags & 1u) != 0;
    if (len < kHeaderSize + 4 + (checksum_ ? 4 : 0)) return fail("messageLength too small");
    length_ = len;
    out_.insert(out_.end(), p, p + kHeaderSize + 4);
    stack_.push_back(Open{Level::frame, 0, length_ - (checksum_ ? 4 : 0)});
    return static_cast<std::ptrdiff_t>(kHeaderSize + 4);
  }
  const std::uint64_t end = stack_.back().end;
  if (pos_ == end) {
    stack_.pop_back();
    if (checksum_) copyLeft_ = 4;  // kept as it was: decode with verifyChecksum off
    then_ = Then::finish_frame;
    return 0;
  }
  if (n < 5) return -1;
  const std::uint8_t kind = p[0];
  const std::uint32_t size = detail::load_u32(p + 1);
  switch (kind) {
    case 0: {  // the body: one document
      if (size < 5 || pos_ + 1 + size > end) return fail("kind-0 body overruns the message");
      out_.push_back(0);
      open(Level::document, pos_ + 1 + size);
      return 5;
    }
    case 1: {  // a document sequence: size, identifier, documents
      if (size < 5 || pos_ + 1 + size > end) return fail("kind-1 section overruns the message");
      const std::size_t limit = std::min<std::uint64_t>(n, 1 + size);
      const std::uint8_t* nul = find_nul(p + 5, limit - 5);
      if (nul == nullptr) {
        if (limit == 1 + size) return fail("kind-1 identifier not terminated");
        return -1;
      }
      const auto parsed = static_cast<std::size_t>(nul - p) + 1;
      out_.push_back(1);
      open(Level::sequence, pos_ + 1 + size);
      out_.insert(out_.end(), p + 5, p + parsed);
      return static_cast<std::ptrdiff_t>(parsed);
    }
    case 2:  // multitenancy, skipped by decode(): left out
      if (size < 4 || pos_ + 1 + size > end) return fail("kind-2 section overruns the message");
      return drop(5, 1 + std::uint64_t{size});
    default:
      return fail("section kind " + std::to_string(kind));
  }
}

std::ptrdiff_t SparseMsg::step_sequence(const std::uint8_t* p, std::size_t n) {
  const std::uint64_t end = stack_.back().end;
  if (pos_ == end) {
    close_top();
    return 0;
  }
  if (n < 4) return -1;
  const std::uint32_t len = detail::load_u32(p);
  if (len < 5 || pos_ + len > end) return fail("kind-1 document overruns its section");
  if (!exhausted_ && out_.size() + len <= budget_) return keep(p, 4, len);
  if (!exhausted_) {
    if (stack_.size() >= kMaxDepth) return fail("nested deeper than " + std::to_string(kMaxDepth));
    open(Level::document, pos_ + len);
    return 4;
  }
  return drop(4, end - pos_);  // this document and every later one
}

std::ptrdiff_t SparseMsg::step_document(const std::uint8_t* p, std::size_t n) {
  const Open& top = stack_.back();
  const std::uint64_t end = top.end;
  if (n < 1) return -1;
  if (pos_ + 1 == end) {
    if (p[0] != 0) return fail("document not terminated");
    out_.push_back(0);
    close_top();
    return 1;
  }
  const std::uint8_t type = p[0];
  if (type == 0) return fail("document ends before its length");
  const std::size_t limit = static_cast<std::size_t>(std::min<std::uint64_t>(n, end - pos_));
  const std::uint8_t* nul = find_nul(p + 1, limit - 1);
  if (nul == nullptr) {
    if (limit == end - pos_) return fail("key not terminated");
    return -1;
  }
  const auto header = static_cast<std::size_t>(nul - p) + 1;  // type, key, NUL
  // The value's size, and how many of its bytes the decision needs.
  std::uint64_t value = 0;
  std::size_t parsed = header;
  auto need = [&](std::size_t k) { return n >= header + k; };
  auto len_at = [&](std::size_t off) { return std::uint64_t{detail::load_u32(p + header + off)}; };
  if (const int fixed = bson_type::fixed_size(type); fixed >= 0) {
    value = static_cast<std::uint64_t>(fixed);
  } else {
    switch (type) {
      case bson_type::kUtf8:
      case bson_type::kCode:
      case bson_type::kSymbol:
      case bson_type::kDbPointer:  // a string, then a 12-byte ObjectId
        if (!need(4)) return -1;
        if (len_at(0) < 1) return fail("string length 0");
        value = 4 + len_at(0) + (type == bson_type::kDbPointer ? 12 : 0);
        parsed = header + 4;
        break;
      case bson_type::kDocument:
      case bson_type::kArray:
        if (!need(4)) return -1;
        if (len_at(0) < 5) return fail("document length below 5");
        value = len_at(0);
        parsed = header + 4;
        break;
      case bson_type::kCodeWScope:
        if (!need(4)) return -1;
        if (len_at(0) < 14) return fail("code with scope shorter than 14");
        value = len_at(0);
        parsed = header + 4;
        break;
      case bson_type::kBinary:
        if (!need(5)) return -1;
        value = 5 + len_at(0);
        parsed = header + 5;
        break;
      case bson_type::kRegex: {
        const std::uint8_t* first = find_nul(p + header, limit - header);
        const std::uint8_t* second =
            first ? find_nul(first + 1, limit - static_cast<std::size_t>(first + 1 - p)) : nullptr;
        if (second == nullptr) {
          if (limit == end - pos_) return fail("regex not terminated");
          return -1;
        }
        parsed = static_cast<std::size_t>(second - p) + 1;
        value = parsed - header;
        break;
      }
      default:
        return fail("element type " + std::to_string(type));
    }
  }
  const std::uint64_t total = header + value;
  if (pos_ + total > end - 1) return fail("element overruns its document");

  const bool container = type == bson_type::kDocument || type == bson_type::kArray;
  const Level child = type == bson_type::kArray ? Level::array : Level::document;
  if (!exhausted_ && out_.size() + total <= budget_) return keep(p, parsed, total);
  if (!exhausted_) {
    // This element crosses the budget.
    if (container) return descend(p, header, child, total);
    exhausted_ = true;
    const std::size_t room = budget_ > out_.size() ? budget_ - out_.size() : 0;
    const std::uint64_t cut = std::max(room, kCutFloor);
    const bool stringy =
        type == bson_type::kUtf8 || type == bson_type::kCode || type == bson_type::kSymbol;
    if (stringy && len_at(0) - 1 > cut) {
      out_.insert(out_.end(), p, p + header);
      thenAt_ = out_.size();
      out_.resize(out_.size() + 4);
      copyLeft_ = cut;
      skipLeft_ = len_at(0) - cut;  // the rest and the NUL, written again
      then_ = Then::finish_string;
      reduced_ = true;
      return static_cast<std::ptrdiff_t>(parsed);
    }
    // Subtype 2 repeats its length inside: not cut.
    if (type == bson_type::kBinary && p[header + 4] != 2 && len_at(0) > cut) {
      out_.insert(out_.end(), p, p + header);
      thenAt_ = out_.size();
      out_.resize(out_.size() + 4);
      out_.push_back(p[header + 4]);
      copyLeft_ = cut;
      skipLeft_ = len_at(0) - cut;
      then_ = Then::finish_binary;
      reduced_ = true;
      return static_cast<std::ptrdiff_t>(parsed);
    }
    if (total <= small_) return keep(p, parsed, total);
    return drop(parsed, total);
  }
  if (top.level == Level::array) return drop(parsed, end - 1 - pos_);  // keys stay 0, 1, 2, ...
  if (total <= small_) return keep(p, parsed, total);
  if (container) return descend(p, header, child, total);
  return drop(parsed, total);
}

bool SparseMsg::finish_skipped() {
  if (mode_ != Mode::parse || skipLeft_ == 0 || copyLeft_ != 0 || then_ != Then::nothing ||
      checksum_ || !carry_.empty())
    return false;
  // After the skip, only container ends may follow: a sequence or the
  // frame ends where it does, a document or array with its NUL.
  std::uint64_t q = pos_ + skipLeft_;
  std::size_t nuls = 0;
  for (auto it = stack_.rbegin(); it != stack_.rend(); ++it) {
    if (it->level == Level::document || it->level == Level::array) {
      if (it->end != q + 1) return false;
      ++q;
      ++nuls;
    } else if (it->end != q) {
      return false;
    }
  }
  if (q != length_) return false;
  pos_ += skipLeft_;
  skipLeft_ = 0;
  reduced_ = true;
  const std::vector<std::uint8_t> ends(nuls, 0);
  feed(ends);
  return done();
}

Result<SparseInflated> inflate_sparse(std::span<const std::uint8_t> frame, std::size_t budget,
                                      std::int32_t maxMessageSize) {
  constexpr std::size_t kPayloadAt = kHeaderSize + 9;  // originalOpcode, uncompressedSize, id
  if (frame.size() < kPayloadAt)
    return detail::make_error(Errc::truncated, frame.size(), "OP_COMPRESSED header incomplete");
  if (detail::load_i32(frame.data() + 12) != static_cast<std::int32_t>(OpCode::compressed) ||
      detail::load_i32(frame.data() + 16) != static_cast<std::int32_t>(OpCode::msg))
    return detail::make_error(Errc::invalid_field, 12, "not an OP_COMPRESSED OP_MSG");
  const std::int32_t usize = detail::load_i32(frame.data() + 20);
  if (usize < 0)
    return detail::make_error(Errc::invalid_field, 20, "uncompressedSize " + std::to_string(usize));
  if (static_cast<std::int64_t>(usize) + static_cast<std::int64_t>(kHeaderSize) > maxMessageSize)
    return detail::make_error(Errc::uncompressed_size_too_large, 20,
                              "uncompressedSize " + std::to_string(usize) + " + 16 > maximum " +
                                  std::to_string(maxMessageSize));
  const std::uint8_t cid = frame[24];
  if (cid > 3)
    return detail::make_error(Errc::unknown_compressor, 24, "compressorId " + std::to_string(cid));
  SparseInflated out;
  out.compressor = static_cast<Compressor>(cid);
  SparseMsg sparse(budget);
  std::uint8_t head[kHeaderSize];
  detail::store_u32(head, static_cast<std::uint32_t>(usize) + kHeaderSize);
  std::memcpy(head + 4, frame.data() + 4, 8);  // requestID, responseTo
  detail::store_u32(head + 12, static_cast<std::uint32_t>(OpCode::msg));
  sparse.feed(head);
  bool early = false;
  auto n =
      decompress_stream(out.compressor, frame.subspan(kPayloadAt), static_cast<std::size_t>(usize),
                        static_cast<std::size_t>(maxMessageSize) - kHeaderSize,
                        [&](std::span<const std::uint8_t> chunk) {
                          sparse.feed(chunk);
                          if (sparse.failed()) return false;
                          early = sparse.finish_skipped();
                          return !early;
                        });
  if (!n) {
    Error e = n.error();
    e.offset = kPayloadAt;
    return e;
  }
  if (sparse.failed() || !sparse.done())
    return detail::make_error(
        Errc::section_overrun, kHeaderSize,
        (sparse.failed() ? sparse.error() : std::string("sparse OP_MSG: the frame ends early")) +
            " (inside the decompressed " + std::string(to_string(out.compressor)) + " payload)");
  out.frame.assign(sparse.frame().begin(), sparse.frame().end());
  out.reduced = sparse.reduced() || early;
  out.inflated = *n;
  return out;
}

}  // namespace varanus::wire
