#include "doc.hpp"

#include <algorithm>
#include <cstring>

namespace varanus::stub {

Doc Doc::copy_of(BsonView v) {
  Doc d;
  StaticDoc s(v);
  if (s.ok()) bson_concat(d.get(), s.get());
  return d;
}

Value::Value(const bson_iter_t& it) {
  Doc d;
  append_iter(d.get(), "v", it);
  bytes_ = d.bytes();
}

bson_iter_t Value::iter() const noexcept {
  // The iterator points into bytes_, not into the (static) bson_t.
  StaticDoc d(bytes_);
  bson_iter_t it;
  bson_iter_init(&it, d.get());
  bson_iter_next(&it);
  return it;
}

BsonView sub_view(const bson_iter_t& it) noexcept {
  const std::uint8_t* data = nullptr;
  std::uint32_t len = 0;
  if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
    bson_iter_document(&it, &len, &data);
  } else if (BSON_ITER_HOLDS_ARRAY(&it)) {
    bson_iter_array(&it, &len, &data);
  }
  return {data, len};
}

bool find(const bson_t* doc, std::string_view key, bson_iter_t* out) noexcept {
  return bson_iter_init(out, doc) &&
         bson_iter_find_w_len(out, key.data(), static_cast<int>(key.size()));
}

bool find_path(const bson_t* doc, std::string_view path, bson_iter_t* out) noexcept {
  if (path.find('.') == std::string_view::npos) return find(doc, path, out);
  std::string p(path);
  bson_iter_t it;
  return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, p.c_str(), out);
}

std::optional<std::int64_t> as_int64(const bson_iter_t& it) noexcept {
  switch (bson_iter_type(&it)) {
    case BSON_TYPE_INT32:
      return bson_iter_int32(&it);
    case BSON_TYPE_INT64:
      return bson_iter_int64(&it);
    case BSON_TYPE_DOUBLE:
      return static_cast<std::int64_t>(bson_iter_double(&it));
    case BSON_TYPE_BOOL:
      return bson_iter_bool(&it) ? 1 : 0;
    default:
      return std::nullopt;
  }
}

std::optional<double> as_double(const bson_iter_t& it) noexcept {
  switch (bson_iter_type(&it)) {
    case BSON_TYPE_INT32:
      return bson_iter_int32(&it);
    case BSON_TYPE_INT64:
      return static_cast<double>(bson_iter_int64(&it));
    case BSON_TYPE_DOUBLE:
      return bson_iter_double(&it);
    default:
      return std::nullopt;
  }
}

bool as_bool(const bson_iter_t& it) noexcept {
  return bson_iter_as_bool(&it);
}

std::optional<std::string_view> as_string(const bson_iter_t& it) noexcept {
  if (!BSON_ITER_HOLDS_UTF8(&it)) return std::nullopt;
  std::uint32_t len = 0;
  const char* s = bson_iter_utf8(&it, &len);
  return std::string_view(s, len);
}

std::optional<std::int64_t> get_int64(const bson_t* doc, std::string_view key) noexcept {
  bson_iter_t it;
  if (!find(doc, key, &it)) return std::nullopt;
  return as_int64(it);
}

std::optional<std::string_view> get_string(const bson_t* doc, std::string_view key) noexcept {
  bson_iter_t it;
  if (!find(doc, key, &it)) return std::nullopt;
  return as_string(it);
}

bool get_bool(const bson_t* doc, std::string_view key) noexcept {
  bson_iter_t it;
  return find(doc, key, &it) && as_bool(it);
}

BsonView get_document(const bson_t* doc, std::string_view key) noexcept {
  bson_iter_t it;
  if (!find(doc, key, &it)) return {};
  return sub_view(it);
}

namespace {

// MongoDB's canonical order of BSON type classes.
int type_rank(bson_type_t t) noexcept {
  switch (t) {
    case BSON_TYPE_MINKEY:
      return 1;
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
      return 2;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_DECIMAL128:
      return 3;
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL:
      return 4;
    case BSON_TYPE_DOCUMENT:
      return 5;
    case BSON_TYPE_ARRAY:
      return 6;
    case BSON_TYPE_BINARY:
      return 7;
    case BSON_TYPE_OID:
      return 8;
    case BSON_TYPE_BOOL:
      return 9;
    case BSON_TYPE_DATE_TIME:
      return 10;
    case BSON_TYPE_TIMESTAMP:
      return 11;
    case BSON_TYPE_REGEX:
      return 12;
    case BSON_TYPE_MAXKEY:
      return 14;
    default:
      return 13;
  }
}

template <class T>
int cmp3(T a, T b) noexcept {
  return a < b ? -1 : (b < a ? 1 : 0);
}

int compare_bytes(const void* a, std::size_t alen, const void* b, std::size_t blen) noexcept {
  int c = std::memcmp(a, b, std::min(alen, blen));
  if (c != 0) return c < 0 ? -1 : 1;
  return cmp3(alen, blen);
}

int compare_documents(const bson_iter_t& a, const bson_iter_t& b) noexcept {
  BsonView va = sub_view(a);
  BsonView vb = sub_view(b);
  StaticDoc da(va);
  StaticDoc db(vb);
  bson_iter_t ia;
  bson_iter_t ib;
  bool ha = bson_iter_init(&ia, da.get()) && bson_iter_next(&ia);
  bool hb = bson_iter_init(&ib, db.get()) && bson_iter_next(&ib);
  while (ha && hb) {
    if (int c = compare_values(ia, ib); c != 0) return c;
    if (int c = std::strcmp(bson_iter_key(&ia), bson_iter_key(&ib)); c != 0) return c < 0 ? -1 : 1;
    ha = bson_iter_next(&ia);
    hb = bson_iter_next(&ib);
  }
  return cmp3(ha, hb);
}

}  // namespace

int compare_values(const bson_iter_t& a, const bson_iter_t& b) noexcept {
  bson_type_t ta = bson_iter_type(&a);
  bson_type_t tb = bson_iter_type(&b);
  if (int c = cmp3(type_rank(ta), type_rank(tb)); c != 0) return c;
  switch (type_rank(ta)) {
    case 3: {
      bool ia = ta != BSON_TYPE_DOUBLE && ta != BSON_TYPE_DECIMAL128;
      bool ib = tb != BSON_TYPE_DOUBLE && tb != BSON_TYPE_DECIMAL128;
      if (ia && ib) return cmp3(*as_int64(a), *as_int64(b));
      return cmp3(as_double(a).value_or(0.0), as_double(b).value_or(0.0));
    }
    case 4: {
      std::uint32_t la = 0;
      std::uint32_t lb = 0;
      const char* sa = ta == BSON_TYPE_UTF8 ? bson_iter_utf8(&a, &la) : bson_iter_symbol(&a, &la);
      const char* sb = tb == BSON_TYPE_UTF8 ? bson_iter_utf8(&b, &lb) : bson_iter_symbol(&b, &lb);
      return compare_bytes(sa, la, sb, lb);
    }
    case 5:
    case 6:
      return compare_documents(a, b);
    case 7: {
      std::uint32_t la = 0;
      std::uint32_t lb = 0;
      const std::uint8_t* da = nullptr;
      const std::uint8_t* db = nullptr;
      bson_subtype_t sa{};
      bson_subtype_t sb{};
      bson_iter_binary(&a, &sa, &la, &da);
      bson_iter_binary(&b, &sb, &lb, &db);
      if (int c = cmp3(la, lb); c != 0) return c;
      if (int c = cmp3(static_cast<int>(sa), static_cast<int>(sb)); c != 0) return c;
      return compare_bytes(da, la, db, lb);
    }
    case 8:
      return compare_bytes(bson_iter_oid(&a)->bytes, 12, bson_iter_oid(&b)->bytes, 12);
    case 9:
      return cmp3(bson_iter_bool(&a), bson_iter_bool(&b));
    case 10:
      return cmp3(bson_iter_date_time(&a), bson_iter_date_time(&b));
    case 11: {
      std::uint32_t ta1 = 0, ia1 = 0, tb1 = 0, ib1 = 0;
      bson_iter_timestamp(&a, &ta1, &ia1);
      bson_iter_timestamp(&b, &tb1, &ib1);
      if (int c = cmp3(ta1, tb1); c != 0) return c;
      return cmp3(ia1, ib1);
    }
    case 1:
    case 2:
    case 14:
      return 0;
    default: {
      // Regex, code, ...: compare the raw value bytes.
      bson_value_t va;
      bson_value_t vb;
      bson_value_copy(bson_iter_value(const_cast<bson_iter_t*>(&a)), &va);
      bson_value_copy(bson_iter_value(const_cast<bson_iter_t*>(&b)), &vb);
      std::string sa = va.value_type == BSON_TYPE_REGEX ? va.value.v_regex.regex : "";
      std::string sb = vb.value_type == BSON_TYPE_REGEX ? vb.value.v_regex.regex : "";
      bson_value_destroy(&va);
      bson_value_destroy(&vb);
      return cmp3(sa, sb);
    }
  }
}

int compare_optional(const bson_iter_t* a, const bson_iter_t* b) noexcept {
  // A missing field sorts and compares as null.
  auto rank = [](const bson_iter_t* it) { return it ? type_rank(bson_iter_type(it)) : 2; };
  if (a == nullptr || b == nullptr) {
    if (int c = cmp3(rank(a), rank(b)); c != 0) return c;
    return 0;
  }
  return compare_values(*a, *b);
}

void append_iter(bson_t* out, std::string_view key, const bson_iter_t& it) {
  bson_append_iter(out, key.data(), static_cast<int>(key.size()), &it);
}

void append_utf8(bson_t* out, std::string_view key, std::string_view value) {
  bson_append_utf8(out, key.data(), static_cast<int>(key.size()), value.data(),
                   static_cast<int>(value.size()));
}

void append_doc(bson_t* out, std::string_view key, BsonView value) {
  StaticDoc d(value);
  bson_append_document(out, key.data(), static_cast<int>(key.size()), d.get());
}

void append_array(bson_t* out, std::string_view key, const std::vector<BsonView>& docs) {
  bson_t arr;
  bson_append_array_begin(out, key.data(), static_cast<int>(key.size()), &arr);
  char buf[16];
  for (std::size_t i = 0; i < docs.size(); ++i) {
    const char* k = nullptr;
    std::size_t klen = bson_uint32_to_string(static_cast<std::uint32_t>(i), &k, buf, sizeof buf);
    StaticDoc d(docs[i]);
    bson_append_document(&arr, k, static_cast<int>(klen), d.get());
  }
  bson_append_array_end(out, &arr);
}

std::string render_value(const bson_iter_t& it) {
  switch (bson_iter_type(&it)) {
    case BSON_TYPE_INT32:
      return std::to_string(bson_iter_int32(&it));
    case BSON_TYPE_INT64:
      return std::to_string(bson_iter_int64(&it));
    case BSON_TYPE_DOUBLE: {
      double d = bson_iter_double(&it);
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      std::string s(buf);
      if (s.find_first_of(".en") == std::string::npos) s += ".0";
      return s;
    }
    case BSON_TYPE_UTF8:
      return "\"" + std::string(*as_string(it)) + "\"";
    case BSON_TYPE_OID: {
      char hex[25];
      bson_oid_to_string(bson_iter_oid(&it), hex);
      return std::string("ObjectId('") + hex + "')";
    }
    case BSON_TYPE_BOOL:
      return bson_iter_bool(&it) ? "true" : "false";
    case BSON_TYPE_NULL:
      return "null";
    default: {
      Doc d;
      append_iter(d.get(), "v", it);
      std::string json = to_json(d.view());
      // {"v" : X } -> X
      auto colon = json.find(':');
      if (colon == std::string::npos || json.size() < colon + 3) return json;
      return json.substr(colon + 2, json.size() - colon - 4);
    }
  }
}

std::string to_json(BsonView v) {
  StaticDoc d(v);
  if (!d.ok()) return "{}";
  std::size_t len = 0;
  char* s = bson_as_relaxed_extended_json(d.get(), &len);
  if (s == nullptr) return "{}";
  std::string out(s, len);
  bson_free(s);
  return out;
}

}  // namespace varanus::stub
