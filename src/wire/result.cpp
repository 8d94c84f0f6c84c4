#include "varanus/wire/result.hpp"

#include <string>

namespace varanus::wire {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::length_too_small:
      return "length_too_small";
    case Errc::length_too_large:
      return "length_too_large";
    case Errc::truncated:
      return "truncated";
    case Errc::trailing_bytes:
      return "trailing_bytes";
    case Errc::section_overrun:
      return "section_overrun";
    case Errc::unknown_section_kind:
      return "unknown_section_kind";
    case Errc::missing_body:
      return "missing_body";
    case Errc::duplicate_body:
      return "duplicate_body";
    case Errc::invalid_bson:
      return "invalid_bson";
    case Errc::invalid_cstring:
      return "invalid_cstring";
    case Errc::bad_checksum:
      return "bad_checksum";
    case Errc::unknown_compressor:
      return "unknown_compressor";
    case Errc::uncompressed_size_too_large:
      return "uncompressed_size_too_large";
    case Errc::decompression_failed:
      return "decompression_failed";
    case Errc::decompressed_size_mismatch:
      return "decompressed_size_mismatch";
    case Errc::nested_compression:
      return "nested_compression";
    case Errc::invalid_field:
      return "invalid_field";
  }
  return "unknown_error";
}

std::string Error::message() const {
  std::string s(to_string(code));
  s += " at offset ";
  s += std::to_string(offset);
  if (!detail.empty()) {
    s += ": ";
    s += detail;
  }
  return s;
}

}  // namespace varanus::wire
