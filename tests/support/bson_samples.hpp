// Random and damaged BSON documents, and libbson's and BsonWalk's traces
// of them, for the differential tests of the walkers against libbson
// (tests/wire/bson_walk_test.cpp, tests/sinks/render_test.cpp).
#pragma once

#include <bson/bson.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "varanus/wire/bson_walk.hpp"

namespace varanus::test_bson {

using namespace varanus::wire;

// A trace of a walk, one line per element or event, compared as text.
inline std::string trace_libbson(const std::uint8_t* data, std::uint32_t len, int depth);

inline std::string trace_iter(bson_iter_t& it, const std::uint8_t* base, int depth) {
  std::string t;
  while (bson_iter_next(&it)) {
    const auto type = static_cast<unsigned>(bson_iter_type(&it));
    t += std::to_string(type) + " " + bson_iter_key(&it) + " @" + std::to_string(it.d1) + "+" +
         std::to_string(it.next_off - it.d1) + "\n";
    if (depth > 20) continue;
    if (type == BSON_TYPE_DOCUMENT || type == BSON_TYPE_ARRAY) {
      std::uint32_t l = 0;
      const std::uint8_t* d = nullptr;
      if (type == BSON_TYPE_DOCUMENT)
        bson_iter_document(&it, &l, &d);
      else
        bson_iter_array(&it, &l, &d);
      // Stricter than bson_iter_recurse, which walks an embedded document
      // without checking its frame (no trailing NUL needed, and a key that
      // runs off its end ends it quietly): BsonWalk wants an embedded
      // document framed as a top-level one (the BSON spec's grammar).
      bson_iter_t child;
      const bool framed = l >= 5 && d[l - 1] == 0;
      if (framed && bson_iter_recurse(&it, &child)) {
        t += "{\n" + trace_iter(child, d, depth + 1) + "}\n";
      } else {
        t += "unframed\n";
      }
    } else if (type == BSON_TYPE_CODEWSCOPE) {
      std::uint32_t codeLen = 0;
      std::uint32_t scopeLen = 0;
      const std::uint8_t* scope = nullptr;
      const char* code = bson_iter_codewscope(&it, &codeLen, &scopeLen, &scope);
      t += "code " + std::to_string(codeLen) + " " +
           std::to_string(reinterpret_cast<const std::uint8_t*>(code) - base) + "\n";
      t += trace_libbson(scope, scopeLen, depth + 1);
    } else if (type == BSON_TYPE_UTF8) {
      std::uint32_t l = 0;
      const char* s = bson_iter_utf8(&it, &l);
      t += "str " + std::to_string(l) + " " + std::string(s, l) + "\n";
    } else if (type == BSON_TYPE_INT32) {
      t += "i32 " + std::to_string(bson_iter_int32(&it)) + "\n";
    } else if (type == BSON_TYPE_INT64) {
      t += "i64 " + std::to_string(bson_iter_int64(&it)) + "\n";
    } else if (type == BSON_TYPE_DOUBLE) {
      t += "dbl " + std::to_string(bson_iter_double(&it)) + "\n";
    } else if (type == BSON_TYPE_BOOL) {
      t += std::string("bool ") + (bson_iter_bool(&it) ? "1" : "0") + "\n";
    }
  }
  t += it.err_off != 0 ? "corrupt\n" : "end\n";
  return t;
}

inline std::string trace_libbson(const std::uint8_t* data, std::uint32_t len, int depth) {
  bson_t b;
  bson_iter_t it;
  if (len < 5 || !bson_init_static(&b, data, len) || !bson_iter_init(&it, &b)) return "unframed\n";
  return "{\n" + trace_iter(it, data, depth) + "}\n";
}

inline std::string trace_walk(BsonView doc, int depth) {
  if (!bson_framed(doc)) return "unframed\n";
  std::string t = "{\n";
  BsonWalk w(doc);
  BsonElement e;
  while (w.next(e)) {
    t += std::to_string(e.type) + " " + std::string(e.key) + " @" +
         std::to_string(e.value - doc.data) + "+" + std::to_string(e.size) + "\n";
    if (depth > 20) continue;
    if (e.is_document()) {
      const BsonView sub = e.as_document();
      if (bson_framed(sub)) {
        // trace_walk wraps in braces itself.
        t += trace_walk(sub, depth + 1);
      } else {
        t += "unframed\n";
      }
    } else if (e.type == bson_type::kCodeWScope) {
      const std::string_view code = bson_code_of_codewscope(e);
      t += "code " + std::to_string(code.size()) + " " +
           std::to_string(reinterpret_cast<const std::uint8_t*>(code.data()) - doc.data) + "\n";
      t += trace_walk(bson_scope_of_codewscope(e), depth + 1);
    } else if (e.type == bson_type::kUtf8) {
      const std::string_view s = e.as_string();
      t += "str " + std::to_string(s.size()) + " " + std::string(s) + "\n";
    } else if (e.type == bson_type::kInt32) {
      t += "i32 " + std::to_string(e.as_int32()) + "\n";
    } else if (e.type == bson_type::kInt64) {
      t += "i64 " + std::to_string(e.as_int64()) + "\n";
    } else if (e.type == bson_type::kDouble) {
      t += "dbl " + std::to_string(e.as_double()) + "\n";
    } else if (e.type == bson_type::kBool) {
      t += std::string("bool ") + (e.as_bool() ? "1" : "0") + "\n";
    }
  }
  t += w.corrupt() ? "corrupt\n" : "end\n";
  return t + "}\n";
}

// The libbson trace of a sub-document is "{\n...}\n" too (trace_libbson
// and the recursion above agree on the framing).
inline std::string oracle(const std::vector<std::uint8_t>& d) {
  return trace_libbson(d.data(), static_cast<std::uint32_t>(d.size()), 0);
}
inline std::string ours(const std::vector<std::uint8_t>& d) {
  return trace_walk({d.data(), static_cast<std::uint32_t>(d.size())}, 0);
}

inline void fill(bson_t* b, std::mt19937& rng, int depth) {
  const int n = static_cast<int>(rng() % 8) + 1;
  for (int i = 0; i < n; ++i) {
    char k[8];
    std::snprintf(k, sizeof k, "k%u", static_cast<unsigned>(rng() % 100));
    switch (rng() % 22) {
      case 0:
        bson_append_double(b, k, -1, static_cast<double>(rng()) / 7.0);
        break;
      case 1: {
        const std::string s(rng() % 20, 'a' + static_cast<char>(rng() % 26));
        bson_append_utf8(b, k, -1, s.data(), static_cast<int>(s.size()));
        break;
      }
      case 2:
      case 3:
        if (depth < 3) {
          bson_t child;
          if (rng() % 2 == 0) {
            bson_append_document_begin(b, k, -1, &child);
            fill(&child, rng, depth + 1);
            bson_append_document_end(b, &child);
          } else {
            bson_append_array_begin(b, k, -1, &child);
            fill(&child, rng, depth + 1);
            bson_append_array_end(b, &child);
          }
        } else {
          bson_append_null(b, k, -1);
        }
        break;
      case 4: {
        std::uint8_t bin[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        const auto sub = static_cast<bson_subtype_t>(rng() % 2 == 0 ? 0 : 2);
        bson_append_binary(b, k, -1, sub, bin, static_cast<std::uint32_t>(rng() % 9));
        break;
      }
      case 5:
        bson_append_undefined(b, k, -1);
        break;
      case 6: {
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, "0123456789abcdef01234567");
        bson_append_oid(b, k, -1, &oid);
        break;
      }
      case 7:
        bson_append_bool(b, k, -1, rng() % 2 == 0);
        break;
      case 8:
        bson_append_date_time(b, k, -1, static_cast<std::int64_t>(rng()));
        break;
      case 9:
        bson_append_null(b, k, -1);
        break;
      case 10:
        bson_append_regex(b, k, -1, "^a.*b$", rng() % 2 == 0 ? "i" : "");
        break;
      case 11: {
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, "0123456789abcdef01234567");
        bson_append_dbpointer(b, k, -1, "db.coll", &oid);
        break;
      }
      case 12:
        bson_append_code(b, k, -1, "function(){return 1;}");
        break;
      case 13:
        bson_append_symbol(b, k, -1, "sym", -1);
        break;
      case 14: {
        bson_t scope = BSON_INITIALIZER;
        BSON_APPEND_INT32(&scope, "x", 1);
        bson_append_code_with_scope(b, k, -1, "x+1", &scope);
        bson_destroy(&scope);
        break;
      }
      case 15:
        bson_append_int32(b, k, -1, static_cast<std::int32_t>(rng()));
        break;
      case 16:
        bson_append_timestamp(b, k, -1, static_cast<std::uint32_t>(rng()),
                              static_cast<std::uint32_t>(rng()));
        break;
      case 17:
        bson_append_int64(b, k, -1, static_cast<std::int64_t>(rng()) << 20);
        break;
      case 18: {
        bson_decimal128_t dec;
        bson_decimal128_from_string("1.5", &dec);
        bson_append_decimal128(b, k, -1, &dec);
        break;
      }
      case 19:
        bson_append_minkey(b, k, -1);
        break;
      case 20:
        bson_append_maxkey(b, k, -1);
        break;
      default:
        bson_append_utf8(b, k, -1, "", 0);
        break;
    }
  }
}

inline std::vector<std::uint8_t> random_doc(std::mt19937& rng) {
  bson_t b = BSON_INITIALIZER;
  fill(&b, rng, 0);
  std::vector<std::uint8_t> v(bson_get_data(&b), bson_get_data(&b) + b.len);
  bson_destroy(&b);
  return v;
}

inline void set_le32(std::vector<std::uint8_t>& d, std::size_t at, std::uint32_t v) {
  if (at + 4 > d.size()) return;
  std::memcpy(d.data() + at, &v, 4);
}

// One random damage: a byte changed, a length field nudged, the document
// cut short or grown (its own header kept right, so the walk gets inside).
inline void mutate(std::vector<std::uint8_t>& d, std::mt19937& rng) {
  const std::size_t at = rng() % d.size();
  switch (rng() % 6) {
    case 0:
      d[at] = static_cast<std::uint8_t>(rng());
      break;
    case 1:
      d[at] = static_cast<std::uint8_t>(d[at] + (rng() % 2 == 0 ? 1 : 255));
      break;
    case 2: {  // a plausible small length where one might be
      std::uint32_t v;
      if (at + 4 <= d.size()) {
        std::memcpy(&v, d.data() + at, 4);
        const int delta = static_cast<int>(rng() % 9) - 4;
        set_le32(d, at, v + static_cast<std::uint32_t>(delta));
      }
      break;
    }
    case 3:  // type byte to something unknown or EOD
      d[at] = static_cast<std::uint8_t>(std::vector<int>{0, 0x14, 0x20, 0x7E, 0x80}[rng() % 5]);
      break;
    case 4:  // cut short, header and terminator fixed up
      if (d.size() > 6) {
        d.resize(5 + rng() % (d.size() - 5));
        d.back() = 0;
        set_le32(d, 0, static_cast<std::uint32_t>(d.size()));
      }
      break;
    default:  // grown with a zero byte inside
      d.insert(d.begin() + static_cast<std::ptrdiff_t>(4 + rng() % (d.size() - 4)), 0);
      set_le32(d, 0, static_cast<std::uint32_t>(d.size()));
      break;
  }
}

}  // namespace varanus::test_bson
