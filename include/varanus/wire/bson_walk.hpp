// varanus::wire — a minimal, inline BSON element walker for the hot paths.
//
// bson_iter_next is an out-of-line call that fills a 100-byte iterator and
// its accessors are more calls; the JSON writer and the tracker's field
// lookups make several per element. This walker is a few inlined compares
// per element and accepts exactly what bson_iter accepts: every length is
// checked against the enclosing document the way bson_iter_next checks it
// (a string's length counts its NUL and the NUL is there; a document's
// length fits; a bool is 0 or 1; a code-with-scope's three lengths agree;
// binary subtype 2 carries its redundant inner length), so a walk over bytes
// libbson rejects stops with corrupt() set, and never reads outside the
// document. tests/wire/bson_walk_test.cpp compares both on mutated documents.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "varanus/wire/bson_view.hpp"

namespace varanus::wire {

/// How deep every walker of a document follows embedded documents (arrays,
/// code-with-scope scopes): the JSON writer, the type-name renderer, the
/// bounded copier, validate_bson and the sparse framing. libbson's
/// BSON_MAX_RECURSION and mongod's own nesting limit are 200 as well; what
/// each walker does past it (show it empty, keep it whole, reject it) is
/// documented where it walks.
inline constexpr int kMaxBsonDepth = 200;

/// BSON element types (the values of libbson's bson_type_t).
namespace bson_type {
inline constexpr std::uint8_t kDouble = 0x01;
inline constexpr std::uint8_t kUtf8 = 0x02;
inline constexpr std::uint8_t kDocument = 0x03;
inline constexpr std::uint8_t kArray = 0x04;
inline constexpr std::uint8_t kBinary = 0x05;
inline constexpr std::uint8_t kUndefined = 0x06;
inline constexpr std::uint8_t kOid = 0x07;
inline constexpr std::uint8_t kBool = 0x08;
inline constexpr std::uint8_t kDateTime = 0x09;
inline constexpr std::uint8_t kNull = 0x0A;
inline constexpr std::uint8_t kRegex = 0x0B;
inline constexpr std::uint8_t kDbPointer = 0x0C;
inline constexpr std::uint8_t kCode = 0x0D;
inline constexpr std::uint8_t kSymbol = 0x0E;
inline constexpr std::uint8_t kCodeWScope = 0x0F;
inline constexpr std::uint8_t kInt32 = 0x10;
inline constexpr std::uint8_t kTimestamp = 0x11;
inline constexpr std::uint8_t kInt64 = 0x12;
inline constexpr std::uint8_t kDecimal128 = 0x13;
inline constexpr std::uint8_t kMaxKey = 0x7F;
inline constexpr std::uint8_t kMinKey = 0xFF;

/// The size of a value of a fixed-size type (0 for the valueless ones), or
/// -1 for a type whose length is in its bytes (or an unknown type).
constexpr int fixed_size(std::uint8_t type) noexcept {
  switch (type) {
    case kDouble:
    case kDateTime:
    case kTimestamp:
    case kInt64:
      return 8;
    case kInt32:
      return 4;
    case kBool:
      return 1;
    case kOid:
      return 12;
    case kDecimal128:
      return 16;
    case kUndefined:
    case kNull:
    case kMinKey:
    case kMaxKey:
      return 0;
    default:
      return -1;
  }
}
}  // namespace bson_type

namespace detail {
inline std::uint32_t le32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}
inline std::uint64_t le64(const std::uint8_t* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}
}  // namespace detail

/// True when `doc` frames a document as bson_init_static wants it: at least
/// 5 bytes, its length prefix equal to its size, a trailing NUL.
inline bool bson_framed(BsonView doc) noexcept {
  return doc.data != nullptr && doc.size >= 5 && detail::le32(doc.data) == doc.size &&
         doc.data[doc.size - 1] == 0;
}

/// One element: its type, key and value bytes (inside the walked document).
/// The accessors read the value as the type says; call the one that matches.
struct BsonElement {
  std::uint8_t type = 0;
  std::string_view key;
  const std::uint8_t* value = nullptr;  // first byte of the value
  std::uint32_t size = 0;               // bytes of the value

  double as_double() const noexcept {
    const std::uint64_t bits = detail::le64(value);
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  std::int32_t as_int32() const noexcept { return static_cast<std::int32_t>(detail::le32(value)); }
  std::int64_t as_int64() const noexcept { return static_cast<std::int64_t>(detail::le64(value)); }
  bool as_bool() const noexcept { return value[0] != 0; }
  /// utf8, code, symbol (and the first part of a dbPointer): without the NUL.
  std::string_view as_string() const noexcept {
    return {reinterpret_cast<const char*>(value) + 4, detail::le32(value) - 1};
  }
  /// document, array: the embedded document (check bson_framed before walking).
  BsonView as_document() const noexcept { return {value, size}; }
  bool is_document() const noexcept {
    return type == bson_type::kDocument || type == bson_type::kArray;
  }
  /// A number's value as a double (double, int32, int64); `fallback` otherwise.
  double as_number(double fallback = 0) const noexcept {
    switch (type) {
      case bson_type::kDouble:
        return as_double();
      case bson_type::kInt32:
        return as_int32();
      case bson_type::kInt64:
        return static_cast<double>(as_int64());
      default:
        return fallback;
    }
  }
};

class BsonWalk {
 public:
  /// Walks `doc`; a document that is not framed (bson_framed) yields no
  /// element and is corrupt().
  explicit BsonWalk(BsonView doc) noexcept
      : p_(doc.data), len_(doc.size), off_(4), corrupt_(!bson_framed(doc)) {
    if (corrupt_) len_ = 0;
  }

  /// The next element: true, or false at the end of the document or at the
  /// first malformed element (then corrupt() is true and the walk is over).
  bool next(BsonElement& e) noexcept {
    if (off_ + 1 >= len_) return false;  // at the trailing NUL (or not framed)
    const std::uint32_t t = off_;
    e.type = p_[t];
    // The key: NUL-terminated; the document's trailing NUL bounds the scan.
    const char* k = reinterpret_cast<const char*>(p_ + t + 1);
    const std::size_t klen = std::strlen(k);
    e.key = std::string_view(k, klen);
    const std::uint32_t o = t + 1 + static_cast<std::uint32_t>(klen) + 1;  // value offset
    e.value = p_ + o;
    std::uint32_t vlen = 0;
    if (const int fixed = bson_type::fixed_size(e.type); fixed >= 0) {
      if (e.type == bson_type::kBool && (o >= len_ || p_[o] > 1)) return fail();
      vlen = static_cast<std::uint32_t>(fixed);
    } else {
      switch (e.type) {
        case bson_type::kUtf8:
        case bson_type::kCode:
        case bson_type::kSymbol: {
          std::uint32_t l;
          if (!length_at(o, l)) return fail();
          if (l == 0 || l > len_ - (o + 4) || o + 4 + l >= len_ || p_[o + 4 + l - 1] != 0)
            return fail();
          vlen = 4 + l;
          break;
        }
        case bson_type::kDocument:
        case bson_type::kArray: {
          std::uint32_t l;
          if (!length_at(o, l) || l > len_ - o) return fail();
          vlen = l;
          break;
        }
        case bson_type::kBinary: {
          std::uint32_t l;
          if (!length_at(o, l) || l >= len_ - o - 4) return fail();
          if (p_[o + 4] == 2) {  // subtype 2: a redundant inner length
            if (l < 4 || detail::le32(p_ + o + 5) + 4 != l) return fail();
          }
          vlen = 5 + l;
          break;
        }
        case bson_type::kRegex: {
          // Two C strings; the trailing NUL of the document bounds both scans.
          if (o >= len_) return fail();
          const std::size_t a = std::strlen(reinterpret_cast<const char*>(p_ + o));
          if (o + a + 1 >= len_) return fail();
          const std::size_t b = std::strlen(reinterpret_cast<const char*>(p_ + o + a + 1));
          vlen = static_cast<std::uint32_t>(a + 1 + b + 1);
          break;
        }
        case bson_type::kDbPointer: {
          std::uint32_t l;
          if (!length_at(o, l)) return fail();
          if (l == 0 || l > len_ - o - 4 || p_[o + 4 + l - 1] != 0) return fail();
          vlen = 4 + l + 12;
          break;
        }
        case bson_type::kCodeWScope: {
          if (len_ < 19 || o >= len_ - 14) return fail();
          const std::uint32_t total = detail::le32(p_ + o);
          if (total < 14 || total >= len_ - o || o + total >= len_) return fail();
          const std::uint32_t l = detail::le32(p_ + o + 4);
          if (l == 0 || l >= len_ - o - 8 || o + 8 + l + 4 >= o + total) return fail();
          const std::uint32_t doclen = detail::le32(p_ + o + 8 + l);
          if (o + 8 + l + doclen != o + total) return fail();
          vlen = total;
          break;
        }
        default:  // EOD before the end, or a type libbson does not know
          return fail();
      }
    }
    const std::uint64_t nextOff = std::uint64_t{o} + vlen;
    if (nextOff >= len_) return fail();
    e.size = vlen;
    off_ = static_cast<std::uint32_t>(nextOff);
    return true;
  }

  bool corrupt() const noexcept { return corrupt_; }

  /// The first element named `key` (a top-level lookup); false if none or
  /// the document is corrupt before it.
  static bool find(BsonView doc, std::string_view key, BsonElement& out) noexcept {
    BsonWalk w(doc);
    while (w.next(out))
      if (out.key == key) return true;
    return false;
  }

  /// The element a dotted path names ("client.driver.name"), following
  /// embedded documents (framed ones only); false if any step is missing,
  /// not a document, or corrupt before it.
  static bool find_path(BsonView doc, std::string_view path, BsonElement& out) noexcept {
    for (;;) {
      const std::size_t dot = path.find('.');
      if (!find(doc, path.substr(0, dot), out)) return false;
      if (dot == std::string_view::npos) return true;
      if (!out.is_document() || !bson_framed(out.as_document())) return false;
      doc = out.as_document();
      path.remove_prefix(dot + 1);
    }
  }

 private:
  /// The 4-byte length at offset o, when it lies before the trailing NUL.
  bool length_at(std::uint32_t o, std::uint32_t& l) const noexcept {
    if (o + 4 >= len_) return false;
    l = detail::le32(p_ + o);
    return true;
  }
  bool fail() noexcept {
    corrupt_ = true;
    len_ = 0;
    return false;
  }

  const std::uint8_t* p_;
  std::uint32_t len_;
  std::uint32_t off_;
  bool corrupt_;
};

/// Code-with-scope parts: the code (without NUL) and the scope document.
inline std::string_view bson_code_of_codewscope(const BsonElement& e) noexcept {
  return {reinterpret_cast<const char*>(e.value) + 8, detail::le32(e.value + 4) - 1};
}
inline BsonView bson_scope_of_codewscope(const BsonElement& e) noexcept {
  const std::uint32_t l = detail::le32(e.value + 4);
  const std::uint8_t* s = e.value + 8 + l;
  return {s, detail::le32(s)};
}

}  // namespace varanus::wire
