// Bounded document copies: see bounded.hpp for what is kept and why.
//
// The Copier walks the document depth first, as both JSON renderers do
// (relaxed JSON in json.cpp, type names in sinks/render.cpp), and keeps two
// counts of the characters still wanted: one for relaxed JSON, one for the
// type-name form (only when asked for). Each element subtracts a lower bound
// of what it adds to each rendering; once both counts are used up, nothing
// more can be shown and the walk stops. Lower bounds are safe: keeping more
// than needed only costs bytes, never changes what is shown.
//
// The walk is BsonWalk's (the data path's one walker); the copy is written
// by hand into the buffer the caller hands back for reuse, so a cut copy
// allocates nothing in steady traffic. Elements kept whole are copied byte
// for byte.
#include "varanus/wire/bounded.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string_view>

#include "bytes.hpp"
#include "varanus/wire/bson_walk.hpp"

namespace varanus::wire {

namespace {

constexpr std::size_t kWholeFactor = 4;  // documents up to 4x the bound are copied whole
constexpr std::int64_t kMargin = 16;     // bytes kept past the bound in a cut string

BsonBytes empty_doc() {
  return BsonBytes{5, 0, 0, 0, 0};
}

/// Lower bound of the relaxed JSON of an atomic value (not a string, binary,
/// document or array), in characters.
std::int64_t atomic_json(std::uint8_t t) noexcept {
  switch (t) {
    case bson_type::kOid:
      return 34;  // {"$oid":"<24 hex>"}
    case bson_type::kDateTime:
    case bson_type::kTimestamp:
    case bson_type::kDecimal128:
    case bson_type::kUndefined:
    case bson_type::kRegex:
    case bson_type::kDbPointer:
      return 19;  // {"$undefined":true} is the shortest of these
    case bson_type::kMinKey:
    case bson_type::kMaxKey:
    case bson_type::kCode:
    case bson_type::kSymbol:
    case bson_type::kCodeWScope:
      return 12;  // {"$code":""}
    case bson_type::kBool:
    case bson_type::kNull:
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

/// BSON written straight into a byte buffer (the caller's reused one):
/// documents are opened and closed, elements appended with their key.
class Writer {
 public:
  explicit Writer(BsonBytes& out) : out_(out) {}

  /// Opens a document (the top one, or an element's value after header()).
  std::size_t open() {
    const std::size_t at = out_.size();
    out_.insert(out_.end(), 4, 0);
    return at;
  }
  void close(std::size_t at) {
    out_.push_back(0);
    detail::store_u32(out_.data() + at, static_cast<std::uint32_t>(out_.size() - at));
  }
  void header(std::uint8_t type, std::string_view key) {
    out_.push_back(type);
    bytes(key.data(), key.size());
    out_.push_back(0);
  }
  void u32(std::uint32_t v) {
    std::uint8_t b[4];
    detail::store_u32(b, v);
    bytes(b, 4);
  }
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }

 private:
  BsonBytes& out_;
};

class Copier {
 public:
  Copier(const CopyBound& b, BsonBytes& out)
      : plain_(static_cast<std::int64_t>(b.jsonLength)),
        types_(b.typeNames ? static_cast<std::int64_t>(b.jsonLength) : 0),
        w_(out) {}

  Writer& writer() noexcept { return w_; }
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

  /// Copies the members of `doc` (framed) into the open document until
  /// satisfied.
  void members(BsonView doc, bool array, int depth) {
    bool first = true;
    BsonWalk walk(doc);
    BsonElement e;
    while (walk.next(e)) {
      if (satisfied()) {
        omit();
        return;
      }
      key(e.key.size(), array, first);
      first = false;
      if (e.is_document() && depth + 1 < kMaxBsonDepth) {
        const BsonView child = e.as_document();
        if (!bson_framed(child)) {
          failed_ = true;
          return;
        }
        open();
        w_.header(e.type, e.key);
        const std::size_t at = w_.open();
        members(child, e.type == bson_type::kArray, depth + 1);
        w_.close(at);
        if (failed_) return;
        continue;
      }
      if (e.type == bson_type::kUtf8) {
        const std::string_view s = e.as_string();
        const std::size_t len = s.size();
        // Relaxed JSON: at least len + 2 characters. Keep what it can show,
        // and a little more, so that the rendering of the copy passes its
        // budget inside this string just as the whole document's does.
        const std::size_t keep =
            plain_ >= static_cast<std::int64_t>(len) + 2
                ? len
                : utf8_cut(s.data(), len,
                           static_cast<std::size_t>(std::max<std::int64_t>(plain_, 0)) + kMargin);
        if (keep < len) cut_ = true;
        w_.header(e.type, e.key);
        w_.u32(static_cast<std::uint32_t>(keep + 1));
        w_.bytes(s.data(), keep);
        w_.bytes("", 1);
        plain_ -= static_cast<std::int64_t>(len) + 2;
        types_ -= 8;  // "string"
        continue;
      }
      if (e.type == bson_type::kBinary) {
        // Subtype 2 (old binary) repeats the length inside: the data follow it.
        const std::uint8_t sub = e.value[4];
        const bool old = sub == 2;
        const std::uint32_t len = old ? detail::le32(e.value + 5) : detail::le32(e.value);
        const std::uint8_t* data = e.value + (old ? 9 : 5);
        // {"$binary":{"base64":"...","subType":"00"}}: 39 characters and at
        // least one per byte.
        const std::size_t keep = plain_ >= static_cast<std::int64_t>(len) + 39
                                     ? len
                                     : static_cast<std::size_t>(std::clamp<std::int64_t>(
                                           plain_ + kMargin, 0, static_cast<std::int64_t>(len)));
        if (keep < len) cut_ = true;
        w_.header(e.type, e.key);
        w_.u32(static_cast<std::uint32_t>(old ? keep + 4 : keep));
        w_.bytes(&sub, 1);
        if (old) w_.u32(static_cast<std::uint32_t>(keep));
        w_.bytes(data, keep);
        plain_ -= static_cast<std::int64_t>(len) + 39;
        types_ -= 9;  // "binData"
        continue;
      }
      // Numbers, dates, ids...: small and kept whole (as are sub-documents
      // past the depth limit and the rare code/regex types).
      w_.header(e.type, e.key);
      w_.bytes(e.value, e.size);
      plain_ -= atomic_json(e.type);
      types_ -= 5;  // "int", the shortest type name
    }
    if (walk.corrupt()) failed_ = true;
  }

 private:
  std::int64_t plain_;
  std::int64_t types_;
  bool cut_ = false;
  bool omitted_ = false;
  bool failed_ = false;
  Writer w_;
};

/// A document that could not be walked: `{}`, said to be cut.
BoundedBytes invalid() {
  return {empty_doc(), true, true};
}

/// The copy a walk built into `out`.
BoundedBytes finish(const Copier& c, BsonBytes&& out) {
  BoundedBytes r;
  if (c.failed()) {
    out.assign({5, 0, 0, 0, 0});
  }
  r.bytes = std::move(out);
  r.cut = c.cut() || c.failed();
  r.omitted = c.omitted() || c.failed();
  return r;
}

/// Room for a bounded copy of a document of `size` bytes: the buffer is
/// reused when it is large enough (no allocation in steady traffic).
void reserve_copy(BsonBytes& out, std::size_t size, const CopyBound& bound) {
  out.clear();
  detail::reserve_reusable(out, std::min(size, 2 * bound.jsonLength + 1024));
}

}  // namespace

BoundedBytes bounded_copy(BsonView doc, const CopyBound& bound, BsonBytes spare) {
  if (!bson_framed(doc)) return invalid();
  if (bound.unlimited() || doc.size <= kWholeFactor * bound.jsonLength) {
    detail::reserve_reusable(spare, doc.size);
    spare.assign(doc.data, doc.data + doc.size);
    return {std::move(spare), false, false};
  }
  reserve_copy(spare, doc.size, bound);
  Copier c(bound, spare);
  c.open();
  const std::size_t top = c.writer().open();
  c.members(doc, false, 0);
  c.writer().close(top);
  return finish(c, std::move(spare));
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
  if (!bson_framed(view.body)) return invalid();
  reserve_copy(spare, total, bound);
  Copier c(bound, spare);
  Writer& w = c.writer();
  c.open();
  const std::size_t top = w.open();
  c.members(view.body, false, 0);
  for (const DocumentSequence& seq : *view.sequences) {
    if (c.failed()) break;
    if (c.satisfied()) {
      c.omit();
      break;
    }
    c.key(seq.identifier.size(), false, false);
    c.open();
    w.header(bson_type::kArray, seq.identifier);
    const std::size_t arr = w.open();
    char keybuf[16];
    std::uint32_t i = 0;
    for (const BsonView& d : seq.documents) {
      if (c.satisfied()) {
        c.omit();
        break;
      }
      // A document that cannot be walked is left out without using up an
      // index, as merged_command does: the array's keys stay 0, 1, 2, ...
      if (!bson_framed(d)) continue;
      const auto r = std::to_chars(keybuf, keybuf + sizeof keybuf, i++);
      const std::string_view key(keybuf, static_cast<std::size_t>(r.ptr - keybuf));
      c.key(key.size(), true, i == 1);
      c.open();
      w.header(bson_type::kDocument, key);
      const std::size_t sub = w.open();
      c.members(d, false, 1);
      w.close(sub);
    }
    w.close(arr);
  }
  w.close(top);
  return finish(c, std::move(spare));
}

}  // namespace varanus::wire
