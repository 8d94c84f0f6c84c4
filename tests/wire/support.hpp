// Helpers shared by the wire tests: BSON from JSON, files from testdata,
// and frame decoding shortcuts.
#pragma once

#include <bson/bson.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::wire::test {

using Bytes = std::vector<std::uint8_t>;

/// Owns a bson_t made from canonical/relaxed Extended JSON (aborts the test
/// binary on bad JSON: test inputs are fixed).
class Doc {
 public:
  explicit Doc(const char* json) {
    bson_error_t e;
    b_ = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json), -1, &e);
    if (b_ == nullptr) {
      std::fprintf(stderr, "bad test JSON %s: %s\n", json, e.message);
      std::abort();
    }
  }
  Doc(const Doc&) = delete;
  Doc& operator=(const Doc&) = delete;
  ~Doc() { bson_destroy(b_); }
  BsonView view() const { return BsonView::of(b_); }
  operator BsonView() const { return view(); }  // NOLINT
  const bson_t* get() const { return b_; }

 private:
  bson_t* b_ = nullptr;
};

inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string testdata(const std::string& rel) {
  return std::string(VARANUS_TESTDATA_DIR) + "/" + rel;
}

/// Canonical relaxed JSON of a view (libbson), for comparisons.
inline std::string json(BsonView v) {
  return v.to_relaxed_json();
}

inline Bytes cat(std::initializer_list<std::span<const std::uint8_t>> parts) {
  Bytes out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace varanus::wire::test
