#include "varanus/wire/bson_view.hpp"

#include <string>

#include "varanus/wire/bson_walk.hpp"

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

// Every element of `doc` and of the documents in it is well formed. Past
// kMaxBsonDepth a document is refused: the recursion (and the stack) stays
// small whatever the input.
bool validate_walk(BsonView doc, int depth) noexcept {
  BsonWalk w(doc);
  BsonElement e;
  while (w.next(e)) {
    BsonView child;
    if (e.is_document()) {
      child = e.as_document();
    } else if (e.type == bson_type::kCodeWScope) {
      child = bson_scope_of_codewscope(e);
    } else {
      continue;
    }
    if (depth + 1 >= kMaxBsonDepth || !bson_framed(child) || !validate_walk(child, depth + 1))
      return false;
  }
  return !w.corrupt();
}

}  // namespace

bool validate_bson(BsonView doc) noexcept {
  return validate_walk(doc, 0);
}

}  // namespace varanus::wire
