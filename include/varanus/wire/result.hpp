// varanus::wire — error values. Every decoder returns a Result: a value or
// an Error naming what was wrong and where. Nothing in wire throws on bad
// input.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace varanus::wire {

/// What was wrong with the bytes. Stable names (to_string) appear in logs.
enum class Errc {
  length_too_small,            ///< messageLength <= 16
  length_too_large,            ///< messageLength > the configured maximum
  truncated,                   ///< fewer bytes than a field needs
  trailing_bytes,              ///< bytes left over inside messageLength
  section_overrun,             ///< an OP_MSG section runs past the message
  unknown_section_kind,        ///< OP_MSG section kind not 0 or 1 (or 2)
  missing_body,                ///< OP_MSG without a kind-0 section
  duplicate_body,              ///< OP_MSG with two kind-0 sections
  invalid_bson,                ///< a document that is not valid BSON
  invalid_cstring,             ///< a cstring without its terminating NUL
  bad_checksum,                ///< OP_MSG CRC-32C does not match
  unknown_compressor,          ///< OP_COMPRESSED compressorId not 0..3
  uncompressed_size_too_large, ///< uncompressedSize over the maximum (bomb guard)
  decompression_failed,        ///< the compressor library rejected the data
  decompressed_size_mismatch,  ///< output size differs from uncompressedSize
  nested_compression,          ///< OP_COMPRESSED inside OP_COMPRESSED
  invalid_field,               ///< a field with an impossible value (negative count...)
};

std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code{};
  std::size_t offset = 0;  ///< byte offset inside the frame where it went wrong
  std::string detail;      ///< human text, e.g. "section kind 7 at offset 21"

  /// "<code> at offset N: detail"
  std::string message() const;
};

/// A value or an Error (std::expected is C++23; g++ 12 lacks it).
template <class T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace varanus::wire
