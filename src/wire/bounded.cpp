// Bounded document copies: see bounded.hpp for what is kept and why.
//
// The Copier walks the document depth first, as both JSON renderers do
// (relaxed JSON in json.cpp, type names in sinks/render.cpp), and keeps two
// counts of the characters still wanted: one for relaxed JSON, one for the
// type-name form (only when asked for). Each element subtracts a lower bound
// of what it adds to each rendering; once both counts are used up, nothing
// more can be shown and the walk stops. Lower bounds are safe: keeping more
// than needed only costs bytes, never changes what is shown.
#include "varanus/wire/bounded.hpp"

#include <algorithm>
#include <cstdint>

#include "bytes.hpp"
#include "varanus/wire/bson_walk.hpp"

namespace varanus::wire {

namespace {

constexpr int kMaxDepth = 100;           // deeper sub-documents are kept whole (rare)
constexpr std::size_t kWholeFactor = 4;  // documents up to 4x the bound are copied whole
constexpr std::int64_t kMargin = 16;     // bytes kept past the bound in a cut string

BsonBytes copy_bytes(const bson_t* b) {
  const std::uint8_t* p = bson_get_data(b);
  return BsonBytes(p, p + b->len);
}

BsonBytes empty_doc() {
  return BsonBytes{5, 0, 0, 0, 0};
}

/// Lower bound of the relaxed JSON of an atomic value (not a string, binary,
/// document or array), in characters.
std::int64_t atomic_json(bson_type_t t) noexcept {
  switch (t) {
    case BSON_TYPE_OID:
      return 34;  // {"$oid":"<24 hex>"}
    case BSON_TYPE_DATE_TIME:
    case BSON_TYPE_TIMESTAMP:
    case BSON_TYPE_DECIMAL128:
    case BSON_TYPE_UNDEFINED:
    case BSON_TYPE_REGEX:
    case BSON_TYPE_DBPOINTER:
      return 19;  // {"$undefined":true} is the shortest of these
    case BSON_TYPE_MINKEY:
    case BSON_TYPE_MAXKEY:
    case BSON_TYPE_CODE:
    case BSON_TYPE_SYMBOL:
    case BSON_TYPE_CODEWSCOPE:
      return 12;  // {"$code":""}
    case BSON_TYPE_BOOL:
    case BSON_TYPE_NULL:
      return 4;
    default:
      return 1;  // numbers
  }
}

/// Length of the UTF-8 prefix of s[0..n) that keeps at least `want` bytes and
/// does not end inside a code point.
std::size_t utf8_cut(const char* s, std::size_t n, std::size_t want) noexcept {
  if (want >= n) return n;
  std::size_t k = want;
  while (k < n && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) ++k;
  return k;
}

class Copier {
 public:
  explicit Copier(const CopyBound& b)
      : plain_(static_cast<std::int64_t>(b.jsonLength)),
        types_(b.typeNames ? static_cast<std::int64_t>(b.jsonLength) : 0) {}

  bool satisfied() const noexcept { return plain_ <= 0 && types_ <= 0; }
  bool cut() const noexcept { return cut_; }
  bool omitted() const noexcept { return omitted_; }
  void omit() noexcept { cut_ = omitted_ = true; }
  bool failed() const noexcept { return failed_; }

  /// Charges an element's comma (not before the first) and key (`"key":`,
  /// none in an array).
  void key(std::size_t keyLength, bool array, bool first) noexcept {
    const std::int64_t cost =
        (first ? 0 : 1) + (array ? 0 : static_cast<std::int64_t>(keyLength) + 3);
    plain_ -= cost;
    types_ -= cost;
  }
  /// Charges an opening bracket. The closing ones are not counted: both
  /// renderers write them past their budget.
  void open() noexcept {
    plain_ -= 1;
    types_ -= 1;
  }

  /// Copies the members of `it` (positioned before the first) into `out`
  /// until satisfied.
  void members(bson_iter_t& it, bson_t* out, bool array, int depth) {
    bool first = true;
    while (bson_iter_next(&it)) {
      if (satisfied()) {
        omit();
        return;
      }
      const char* k = bson_iter_key(&it);
      const auto klen = static_cast<int>(bson_iter_key_len(&it));
      key(static_cast<std::size_t>(klen), array, first);
      first = false;
      const bson_type_t type = bson_iter_type(&it);
      if ((type == BSON_TYPE_DOCUMENT || type == BSON_TYPE_ARRAY) && depth + 1 < kMaxDepth) {
        bson_iter_t child;
        if (!bson_iter_recurse(&it, &child)) {
          failed_ = true;
          return;
        }
        open();
        bson_t sub;
        const bool isArray = type == BSON_TYPE_ARRAY;
        if (isArray) {
          bson_append_array_begin(out, k, klen, &sub);
        } else {
          bson_append_document_begin(out, k, klen, &sub);
        }
        members(child, &sub, isArray, depth + 1);
        if (isArray) {
          bson_append_array_end(out, &sub);
        } else {
          bson_append_document_end(out, &sub);
        }
        if (failed_) return;
        continue;
      }
      if (type == BSON_TYPE_UTF8) {
        std::uint32_t len = 0;
        const char* s = bson_iter_utf8(&it, &len);
        // Relaxed JSON: at least len + 2 characters. Keep what it can show,
        // and a little more, so that the rendering of the copy passes its
        // budget inside this string just as the whole document's does.
        const std::size_t keep =
            plain_ >= static_cast<std::int64_t>(len) + 2
                ? len
                : utf8_cut(s, len,
                           static_cast<std::size_t>(std::max<std::int64_t>(plain_, 0)) + kMargin);
        if (keep < len) cut_ = true;
        bson_append_utf8(out, k, klen, s, static_cast<int>(keep));
        plain_ -= static_cast<std::int64_t>(len) + 2;
        types_ -= 8;  // "string"
        continue;
      }
      if (type == BSON_TYPE_BINARY) {
        bson_subtype_t sub{};
        std::uint32_t len = 0;
        const std::uint8_t* data = nullptr;
        bson_iter_binary(&it, &sub, &len, &data);
        // {"$binary":{"base64":"...","subType":"00"}}: 39 characters and at
        // least one per byte.
        const std::size_t keep = plain_ >= static_cast<std::int64_t>(len) + 39
                                     ? len
                                     : static_cast<std::size_t>(std::clamp<std::int64_t>(
                                           plain_ + kMargin, 0, static_cast<std::int64_t>(len)));
        if (keep < len) cut_ = true;
        bson_append_binary(out, k, klen, sub, data, static_cast<std::uint32_t>(keep));
        plain_ -= static_cast<std::int64_t>(len) + 39;
        types_ -= 9;  // "binData"
        continue;
      }
      // Numbers, dates, ids...: small and kept whole (as are sub-documents
      // past the depth limit and the rare code/regex types).
      if (!bson_append_iter(out, k, klen, &it)) {
        failed_ = true;
        return;
      }
      plain_ -= atomic_json(type);
      types_ -= 5;  // "int", the shortest type name
    }
    if (it.err_off != 0) failed_ = true;
  }

 private:
  std::int64_t plain_;
  std::int64_t types_;
  bool cut_ = false;
  bool omitted_ = false;
  bool failed_ = false;
};

/// A document that could not be walked: `{}`, said to be cut.
BoundedBytes invalid() {
  return {empty_doc(), true, true};
}

/// The copy a walk built into `out` (destroyed here).
BoundedBytes finish(const Copier& c, bson_t* out) {
  BoundedBytes r;
  r.bytes = c.failed() ? empty_doc() : copy_bytes(out);
  r.cut = c.cut() || c.failed();
  r.omitted = c.omitted() || c.failed();
  bson_destroy(out);
  return r;
}

}  // namespace

BoundedBytes bounded_copy(BsonView doc, const CopyBound& bound, BsonBytes spare) {
  if (!bson_framed(doc)) return invalid();
  if (bound.unlimited() || doc.size <= kWholeFactor * bound.jsonLength) {
    detail::reserve_reusable(spare, doc.size);
    spare.assign(doc.data, doc.data + doc.size);
    return {std::move(spare), false, false};
  }
  bson_t in;
  if (!doc.init_static(&in)) return invalid();
  bson_iter_t it;
  if (!bson_iter_init(&it, &in)) return invalid();
  Copier c(bound);
  c.open();
  bson_t out;
  bson_init(&out);
  c.members(it, &out, false, 0);
  return finish(c, &out);
}

BoundedBytes bounded_copy(BsonBytes&& doc, const CopyBound& bound) {
  if (bound.unlimited() || doc.size() <= kWholeFactor * bound.jsonLength)
    return {std::move(doc), false, false};
  return bounded_copy(BsonView{doc.data(), static_cast<std::uint32_t>(doc.size())}, bound);
}

BoundedBytes bounded_merged_command(const CommandView& view, const CopyBound& bound,
                                    BsonBytes spare) {
  if (view.sequences == nullptr || view.sequences->empty())
    return bounded_copy(view.body, bound, std::move(spare));
  std::size_t total = view.body.size;
  for (const DocumentSequence& seq : *view.sequences)
    for (const BsonView& d : seq.documents) total += d.size + 16;
  if (bound.unlimited() || total <= kWholeFactor * bound.jsonLength)
    return {merged_command(view, std::move(spare)), false, false};
  bson_t body;
  bson_iter_t it;
  if (!view.body.init_static(&body) || !bson_iter_init(&it, &body)) return invalid();
  Copier c(bound);
  c.open();
  bson_t out;
  bson_init(&out);
  c.members(it, &out, false, 0);
  for (const DocumentSequence& seq : *view.sequences) {
    if (c.failed()) break;
    if (c.satisfied()) {
      c.omit();
      break;
    }
    c.key(seq.identifier.size(), false, false);
    c.open();
    bson_t arr;
    bson_append_array_begin(&out, seq.identifier.data(), static_cast<int>(seq.identifier.size()),
                            &arr);
    char keybuf[16];
    std::uint32_t i = 0;
    for (const BsonView& d : seq.documents) {
      if (c.satisfied()) {
        c.omit();
        break;
      }
      // A document that cannot be walked is left out without using up an
      // index, as merged_command does: the array's keys stay 0, 1, 2, ...
      bson_t doc;
      bson_iter_t dit;
      if (!d.init_static(&doc) || !bson_iter_init(&dit, &doc)) continue;
      const char* key = nullptr;
      const std::size_t klen = bson_uint32_to_string(i++, &key, keybuf, sizeof keybuf);
      c.key(klen, true, i == 1);
      c.open();
      bson_t sub;
      bson_append_document_begin(&arr, key, static_cast<int>(klen), &sub);
      c.members(dit, &sub, false, 1);
      bson_append_document_end(&arr, &sub);
    }
    bson_append_array_end(&out, &arr);
  }
  return finish(c, &out);
}

}  // namespace varanus::wire
