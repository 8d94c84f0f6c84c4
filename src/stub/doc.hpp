// varanus-stub — small RAII and comparison helpers over libbson.
//
// Stored documents are plain byte vectors (wire::BsonBytes); they are read
// in place with bson_init_static. Replies are built in a Doc, an owning
// bson_t that can be moved around.
#pragma once

#include <bson/bson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/wire/bson_view.hpp"

namespace varanus::stub {

using wire::BsonBytes;
using wire::BsonView;

/// An owning, movable bson_t (heap-allocated with bson_new).
class Doc {
 public:
  Doc() : b_(bson_new()) {}
  ~Doc() {
    if (b_ != nullptr) bson_destroy(b_);
  }
  Doc(Doc&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
  Doc& operator=(Doc&& o) noexcept {
    if (this != &o) {
      if (b_ != nullptr) bson_destroy(b_);
      b_ = o.b_;
      o.b_ = nullptr;
    }
    return *this;
  }
  Doc(const Doc&) = delete;
  Doc& operator=(const Doc&) = delete;

  /// A copy of existing BSON bytes (empty document if they are not BSON).
  static Doc copy_of(BsonView v);

  bson_t* get() noexcept { return b_; }
  const bson_t* get() const noexcept { return b_; }
  BsonView view() const noexcept { return BsonView::of(b_); }
  BsonBytes bytes() const { return {bson_get_data(b_), bson_get_data(b_) + b_->len}; }

 private:
  bson_t* b_;
};

/// A read-only bson_t over bytes that must outlive it.
class StaticDoc {
 public:
  explicit StaticDoc(BsonView v) noexcept {
    ok_ = v.data != nullptr && bson_init_static(&b_, v.data, v.size);
    if (!ok_) bson_init(&b_);
  }
  explicit StaticDoc(const BsonBytes& bytes) noexcept
      : StaticDoc(BsonView{bytes.data(), static_cast<std::uint32_t>(bytes.size())}) {}
  ~StaticDoc() { bson_destroy(&b_); }
  StaticDoc(const StaticDoc&) = delete;
  StaticDoc& operator=(const StaticDoc&) = delete;

  bool ok() const noexcept { return ok_; }
  const bson_t* get() const noexcept { return &b_; }

 private:
  bson_t b_;
  bool ok_ = false;
};

inline BsonView view_of(const BsonBytes& bytes) noexcept {
  return {bytes.data(), static_cast<std::uint32_t>(bytes.size())};
}

/// One BSON value that can live in containers. bson_iter_t is declared
/// 128-byte aligned, which heap containers do not honour (UBSan), so keep
/// iterators on the stack and copies of values in a Value.
class Value {
 public:
  explicit Value(const bson_iter_t& it);
  /// An iterator at the value; valid while this Value lives.
  bson_iter_t iter() const noexcept;

 private:
  BsonBytes bytes_;  // {"v": value}
};

/// The sub-document / array an iterator points at (empty view otherwise).
BsonView sub_view(const bson_iter_t& it) noexcept;

/// Finds a top-level key (exact, case-sensitive); false when absent.
bool find(const bson_t* doc, std::string_view key, bson_iter_t* out) noexcept;
/// Finds a dotted path ("a.b.c"); false when absent.
bool find_path(const bson_t* doc, std::string_view path, bson_iter_t* out) noexcept;

/// Numeric value of int32/int64/double/bool (mongod accepts any number for
/// batchSize, limit...). nullopt for other types.
std::optional<std::int64_t> as_int64(const bson_iter_t& it) noexcept;
std::optional<double> as_double(const bson_iter_t& it) noexcept;
/// Truthiness as mongod reads flags: false for false/0/null/missing.
bool as_bool(const bson_iter_t& it) noexcept;
std::optional<std::string_view> as_string(const bson_iter_t& it) noexcept;

/// Convenience lookups on a document.
std::optional<std::int64_t> get_int64(const bson_t* doc, std::string_view key) noexcept;
std::optional<std::string_view> get_string(const bson_t* doc, std::string_view key) noexcept;
bool get_bool(const bson_t* doc, std::string_view key) noexcept;
BsonView get_document(const bson_t* doc, std::string_view key) noexcept;  ///< doc or array

/// Total order over BSON values, as MongoDB sorts them (type class first,
/// then value; numbers compare across int32/int64/double). <0, 0, >0.
int compare_values(const bson_iter_t& a, const bson_iter_t& b) noexcept;
/// compare_values for a missing value (treated as null), either side.
int compare_optional(const bson_iter_t* a, const bson_iter_t* b) noexcept;

/// Appends the iterator's value under `key`.
void append_iter(bson_t* out, std::string_view key, const bson_iter_t& it);
void append_utf8(bson_t* out, std::string_view key, std::string_view value);
void append_doc(bson_t* out, std::string_view key, BsonView value);
void append_array(bson_t* out, std::string_view key, const std::vector<BsonView>& docs);

/// mongod's short rendering of a value in messages: 1, "a", ObjectId('..').
std::string render_value(const bson_iter_t& it);

/// Relaxed Extended JSON for logs ("{}" when invalid).
std::string to_json(BsonView v);

}  // namespace varanus::stub
