// A non-owning view of one BSON document inside a wire message.
#pragma once

#include <bson/bson.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace varanus::wire {

struct BsonView {
  const std::uint8_t* data = nullptr;
  std::uint32_t size = 0;

  bool empty() const noexcept { return data == nullptr; }
  std::span<const std::uint8_t> bytes() const noexcept { return {data, size}; }

  /// A bson_t that reads the viewed bytes in place (bson_init_static).
  /// Returns false if the length prefix or terminator is wrong.
  bool init_static(bson_t* out) const noexcept;

  /// Relaxed Extended JSON via libbson (slow path: CLI, tests). "" on failure.
  std::string to_relaxed_json() const;

  static BsonView of(const bson_t* doc) noexcept { return {bson_get_data(doc), doc->len}; }
};

/// Full structural validation (element types, lengths, UTF-8 of keys and
/// strings not required): true when libbson's bson_iter can iterate every
/// element, embedded documents framed and nested at most kMaxBsonDepth
/// deep (bson_walk.hpp; walked with BsonWalk).
bool validate_bson(BsonView doc) noexcept;

/// Owning copy of a document's bytes (used where a view must outlive its frame).
using BsonBytes = std::vector<std::uint8_t>;

}  // namespace varanus::wire
