// Little-endian loads/stores and a bounds-checked cursor, private to wire.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/result.hpp"

namespace varanus::wire::detail {

inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::int32_t load_i32(const std::uint8_t* p) noexcept {
  return static_cast<std::int32_t>(load_u32(p));
}
inline std::int64_t load_i64(const std::uint8_t* p) noexcept {
  const std::uint64_t lo = load_u32(p);
  const std::uint64_t hi = load_u32(p + 4);
  return static_cast<std::int64_t>(lo | (hi << 32));
}

inline void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  out.push_back(static_cast<std::uint8_t>(v));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v >> 16));
  out.push_back(static_cast<std::uint8_t>(v >> 24));
}
inline void put_i32(std::vector<std::uint8_t>& out, std::int32_t v) {
  put_u32(out, static_cast<std::uint32_t>(v));
}
inline void put_i64(std::vector<std::uint8_t>& out, std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  put_u32(out, static_cast<std::uint32_t>(u));
  put_u32(out, static_cast<std::uint32_t>(u >> 32));
}
inline void store_u32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
  p[2] = static_cast<std::uint8_t>(v >> 16);
  p[3] = static_cast<std::uint8_t>(v >> 24);
}

/// Makes `buf` hold at least `n` bytes, reusing it when it already can.
/// Grown buffers are rounded up to a power of two (at least 128): the
/// buffers handed around between commands and replies settle into a few
/// sizes that fit each other, instead of each slightly larger document
/// reallocating. Contents are not kept.
inline void reserve_reusable(std::vector<std::uint8_t>& buf, std::size_t n) {
  if (buf.capacity() >= n) return;
  std::vector<std::uint8_t>().swap(buf);
  buf.reserve(std::bit_ceil(std::max<std::size_t>(n, 128)));
}

inline Error make_error(Errc code, std::size_t offset, std::string detail) {
  return Error{code, offset, std::move(detail)};
}

/// A cursor over [data, data+size) whose positions are reported as
/// `base + pos` (the offset inside the frame).
class Cursor {
 public:
  Cursor(std::span<const std::uint8_t> bytes, std::size_t base) noexcept
      : p_(bytes.data()), n_(bytes.size()), base_(base) {}

  std::size_t pos() const noexcept { return pos_; }
  std::size_t offset() const noexcept { return base_ + pos_; }
  std::size_t remaining() const noexcept { return n_ - pos_; }
  bool at_end() const noexcept { return pos_ == n_; }
  const std::uint8_t* here() const noexcept { return p_ + pos_; }

  bool need(std::size_t k, const char* what, Error& err) const {
    if (remaining() >= k) return true;
    err = make_error(Errc::truncated, offset(),
                     std::string(what) + " needs " + std::to_string(k) + " bytes, " +
                         std::to_string(remaining()) + " left");
    return false;
  }
  bool i32(std::int32_t& v, const char* what, Error& err) {
    if (!need(4, what, err)) return false;
    v = load_i32(here());
    pos_ += 4;
    return true;
  }
  bool u32(std::uint32_t& v, const char* what, Error& err) {
    if (!need(4, what, err)) return false;
    v = load_u32(here());
    pos_ += 4;
    return true;
  }
  bool i64(std::int64_t& v, const char* what, Error& err) {
    if (!need(8, what, err)) return false;
    v = load_i64(here());
    pos_ += 8;
    return true;
  }
  bool u8(std::uint8_t& v, const char* what, Error& err) {
    if (!need(1, what, err)) return false;
    v = p_[pos_++];
    return true;
  }
  bool cstring(std::string_view& s, const char* what, Error& err) {
    const void* nul = remaining() ? std::memchr(here(), 0, remaining()) : nullptr;
    if (nul == nullptr) {
      err =
          make_error(Errc::invalid_cstring, offset(), std::string(what) + " has no NUL terminator");
      return false;
    }
    const auto len = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nul) - here());
    s = std::string_view(reinterpret_cast<const char*>(here()), len);
    pos_ += len + 1;
    return true;
  }
  /// One BSON document: the length prefix must fit, be >= 5, and end in NUL;
  /// with `validate`, every element is walked. `overrun` is the code used
  /// when the declared length runs past the end of this cursor.
  bool bson(BsonView& v, const char* what, bool validate, Errc overrun, Error& err) {
    if (!need(4, what, err)) return false;
    const std::int32_t len = load_i32(here());
    if (len < 5) {
      err = make_error(Errc::invalid_bson, offset(),
                       std::string(what) + " declares length " + std::to_string(len));
      return false;
    }
    if (static_cast<std::size_t>(len) > remaining()) {
      err = make_error(overrun, offset(),
                       std::string(what) + " declares " + std::to_string(len) + " bytes, " +
                           std::to_string(remaining()) + " left");
      return false;
    }
    const auto ulen = static_cast<std::uint32_t>(len);
    if (p_[pos_ + ulen - 1] != 0) {
      err = make_error(Errc::invalid_bson, offset(),
                       std::string(what) + " lacks its terminating NUL");
      return false;
    }
    v = BsonView{here(), ulen};
    if (validate && !validate_bson(v)) {
      err = make_error(Errc::invalid_bson, offset(), std::string(what) + " is not valid BSON");
      return false;
    }
    pos_ += ulen;
    return true;
  }
  void skip(std::size_t k) noexcept { pos_ += k; }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t base_;
  std::size_t pos_ = 0;
};

}  // namespace varanus::wire::detail
