#include "varanus/wire/bson_view.hpp"

#include <string>

namespace varanus::wire {

bool BsonView::init_static(bson_t* out) const noexcept {
  if (data == nullptr || size < 5) return false;
  return bson_init_static(out, data, size);
}

std::string BsonView::to_relaxed_json() const {
  bson_t b;
  if (!init_static(&b)) return {};
  std::size_t len = 0;
  char* s = bson_as_relaxed_extended_json(&b, &len);
  if (s == nullptr) return {};
  std::string out(s, len);
  bson_free(s);
  return out;
}

namespace {

// mongod refuses commands nested deeper than ~200 levels; a bound keeps the
// recursion (and the stack) small whatever the input.
constexpr int kMaxDepth = 256;

bool validate_iter(bson_iter_t& it, int depth) noexcept {
  while (bson_iter_next(&it)) {
    switch (bson_iter_type(&it)) {
      case BSON_TYPE_DOCUMENT:
      case BSON_TYPE_ARRAY: {
        if (depth >= kMaxDepth) return false;
        bson_iter_t child;
        if (!bson_iter_recurse(&it, &child)) return false;
        if (!validate_iter(child, depth + 1)) return false;
        break;
      }
      case BSON_TYPE_CODEWSCOPE: {
        if (depth >= kMaxDepth) return false;
        std::uint32_t code_len = 0;
        std::uint32_t scope_len = 0;
        const std::uint8_t* scope = nullptr;
        if (bson_iter_codewscope(&it, &code_len, &scope_len, &scope) == nullptr) return false;
        bson_t s;
        if (!bson_init_static(&s, scope, scope_len)) return false;
        bson_iter_t child;
        if (!bson_iter_init(&child, &s)) return false;
        if (!validate_iter(child, depth + 1)) return false;
        break;
      }
      default:
        break;
    }
  }
  // bson_iter_next stops both at the end and at corruption; err_off tells them apart.
  return it.err_off == 0;
}

}  // namespace

bool validate_bson(BsonView doc) noexcept {
  bson_t b;
  if (!doc.init_static(&b)) return false;
  bson_iter_t it;
  if (!bson_iter_init(&it, &b)) return false;
  return validate_iter(it, 0);
}

}  // namespace varanus::wire
