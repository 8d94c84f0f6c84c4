#include "legacy.hpp"

#include <cstring>
#include <limits>
#include <string>

#include "varanus/wire/bson_walk.hpp"

namespace varanus::monitor::detail {
namespace {

// RAII for a stack bson_t being built.
struct Doc {
  bson_t b;
  Doc() { bson_init(&b); }
  ~Doc() { bson_destroy(&b); }
  Doc(const Doc&) = delete;
  Doc& operator=(const Doc&) = delete;
  bson_t* operator&() { return &b; }
};

int len(std::string_view s) {
  return static_cast<int>(s.size());
}

void append_view(bson_t* out, std::string_view key, wire::BsonView v, bool asArray = false) {
  bson_t doc;
  if (!v.init_static(&doc)) return;
  if (asArray)
    bson_append_array(out, key.data(), len(key), &doc);
  else
    bson_append_document(out, key.data(), len(key), &doc);
}

std::string_view collection_of(std::string_view ns) {
  auto dot = ns.find('.');
  return dot == std::string_view::npos ? std::string_view{} : ns.substr(dot + 1);
}

void append_docs_array(bson_t* out, std::string_view key, std::span<const wire::BsonView> docs) {
  bson_t arr;
  bson_append_array_begin(out, key.data(), len(key), &arr);
  char buf[16];
  std::uint32_t i = 0;
  for (const auto& d : docs) {
    const char* k;
    std::size_t klen = bson_uint32_to_string(i++, &k, buf, sizeof buf);
    bson_t doc;
    if (d.init_static(&doc)) bson_append_document(&arr, k, static_cast<int>(klen), &doc);
  }
  bson_append_array_end(out, &arr);
}

void append_int64_array(bson_t* out, std::string_view key, std::span<const std::int64_t> ids) {
  bson_t arr;
  bson_append_array_begin(out, key.data(), len(key), &arr);
  char buf[16];
  std::uint32_t i = 0;
  for (auto id : ids) {
    const char* k;
    auto klen = bson_uint32_to_string(i++, &k, buf, sizeof buf);
    bson_append_int64(&arr, k, static_cast<int>(klen), id);
  }
  bson_append_array_end(out, &arr);
}

// Legacy query modifiers and the find-command option each becomes.
struct Modifier {
  std::string_view legacy;
  std::string_view option;
};
constexpr Modifier kModifiers[] = {
    {"$hint", "hint"},
    {"$comment", "comment"},
    {"$maxScan", "maxScan"},
    {"$max", "max"},
    {"$min", "min"},
    {"$returnKey", "returnKey"},
    {"$showDiskLoc", "showRecordId"},
    {"$snapshot", "snapshot"},
    {"$maxTimeMS", "maxTimeMS"},
};

}  // namespace

wire::BsonBytes bytes_of(const bson_t* doc) {
  const std::uint8_t* p = bson_get_data(doc);
  return wire::BsonBytes(p, p + doc->len);
}

wire::BsonBytes copy_of(wire::BsonView doc) {
  if (doc.empty()) return empty_document();
  return wire::BsonBytes(doc.data, doc.data + doc.size);
}

wire::BsonBytes empty_document() {
  return wire::BsonBytes{5, 0, 0, 0, 0};
}

wire::BsonBytes ok_reply() {
  Doc d;
  BSON_APPEND_DOUBLE(&d, "ok", 1.0);
  return bytes_of(&d);
}

wire::BsonBytes find_from_query(const wire::OpQuery& q) {
  Doc d;
  auto coll = q.collection();
  bson_append_utf8(&d, "find", 4, coll.data(), len(coll));

  bson_t query;
  bool wrapped = false;
  bson_iter_t it;
  if (q.query.init_static(&query)) {
    wrapped =
        bson_iter_init_find(&it, &query, "$query") || bson_iter_init_find(&it, &query, "query");
    if (wrapped && BSON_ITER_HOLDS_DOCUMENT(&it)) {
      std::uint32_t n;
      const std::uint8_t* data;
      bson_iter_document(&it, &n, &data);
      append_view(&d, "filter", wire::BsonView{data, n});
    } else {
      wrapped = false;
      bson_append_document(&d, "filter", 6, &query);
    }
  }
  if (wrapped && bson_iter_init_find(&it, &query, "$orderby") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    bson_append_iter(&d, "sort", 4, &it);
  }
  if (q.returnFieldsSelector) append_view(&d, "projection", *q.returnFieldsSelector);
  if (q.numberToSkip > 0) BSON_APPEND_INT32(&d, "skip", q.numberToSkip);
  if (q.numberToReturn < 0) {
    // -INT32_MIN overflows (UB; found by the capture fuzzer): the limit
    // such a query asks for is as large as an int32 goes.
    const std::int32_t limit = q.numberToReturn == std::numeric_limits<std::int32_t>::min()
                                   ? std::numeric_limits<std::int32_t>::max()
                                   : -q.numberToReturn;
    BSON_APPEND_INT32(&d, "limit", limit);
    BSON_APPEND_BOOL(&d, "singleBatch", true);
  } else if (q.numberToReturn > 0) {
    BSON_APPEND_INT32(&d, "batchSize", q.numberToReturn);
  }
  if (wrapped) {
    for (const auto& m : kModifiers) {
      if (bson_iter_init_find(&it, &query, std::string(m.legacy).c_str()))
        bson_append_iter(&d, m.option.data(), len(m.option), &it);
    }
  }
  if (q.flags & wire::kQueryTailable) BSON_APPEND_BOOL(&d, "tailable", true);
  if (q.flags & (1 << 3)) BSON_APPEND_BOOL(&d, "oplogReplay", true);
  if (q.flags & wire::kQueryNoCursorTimeout) BSON_APPEND_BOOL(&d, "noCursorTimeout", true);
  if (q.flags & wire::kQueryAwaitData) BSON_APPEND_BOOL(&d, "awaitData", true);
  if (q.flags & wire::kQueryPartial) BSON_APPEND_BOOL(&d, "allowPartialResults", true);
  return bytes_of(&d);
}

wire::BsonBytes getmore_command(std::int64_t cursorId, std::string_view collection) {
  Doc d;
  BSON_APPEND_INT64(&d, "getMore", cursorId);
  bson_append_utf8(&d, "collection", 10, collection.data(), len(collection));
  return bytes_of(&d);
}

wire::BsonBytes getmore_from_op(const wire::OpGetMore& g) {
  Doc d;
  BSON_APPEND_INT64(&d, "getMore", g.cursorId);
  auto coll = collection_of(g.fullCollectionName);
  bson_append_utf8(&d, "collection", 10, coll.data(), len(coll));
  if (g.numberToReturn != 0) BSON_APPEND_INT32(&d, "batchSize", g.numberToReturn);
  return bytes_of(&d);
}

wire::BsonBytes killcursors_from_op(const wire::OpKillCursors& k) {
  Doc d;
  bson_append_utf8(&d, "killCursors", 11, "", 0);
  append_int64_array(&d, "cursors", k.cursorIds);
  return bytes_of(&d);
}

wire::BsonBytes killcursors_reply(const wire::OpKillCursors& k) {
  Doc d;
  append_int64_array(&d, "cursorsUnknown", k.cursorIds);
  BSON_APPEND_DOUBLE(&d, "ok", 1.0);
  return bytes_of(&d);
}

wire::BsonBytes insert_from_op(const wire::OpInsert& op) {
  Doc d;
  auto coll = collection_of(op.fullCollectionName);
  bson_append_utf8(&d, "insert", 6, coll.data(), len(coll));
  append_docs_array(&d, "documents", op.documents);
  BSON_APPEND_BOOL(&d, "ordered", (op.flags & 1) == 0);  // bit 0 ContinueOnError
  return bytes_of(&d);
}

wire::BsonBytes update_from_op(const wire::OpUpdate& op) {
  Doc d;
  auto coll = collection_of(op.fullCollectionName);
  bson_append_utf8(&d, "update", 6, coll.data(), len(coll));
  bson_t arr, one;
  bson_append_array_begin(&d, "updates", 7, &arr);
  bson_append_document_begin(&arr, "0", 1, &one);
  append_view(&one, "q", op.selector);
  append_view(&one, "u", op.update);
  BSON_APPEND_BOOL(&one, "upsert", (op.flags & 1) != 0);
  BSON_APPEND_BOOL(&one, "multi", (op.flags & 2) != 0);
  bson_append_document_end(&arr, &one);
  bson_append_array_end(&d, &arr);
  return bytes_of(&d);
}

wire::BsonBytes delete_from_op(const wire::OpDelete& op) {
  Doc d;
  auto coll = collection_of(op.fullCollectionName);
  bson_append_utf8(&d, "delete", 6, coll.data(), len(coll));
  bson_t arr, one;
  bson_append_array_begin(&d, "deletes", 7, &arr);
  bson_append_document_begin(&arr, "0", 1, &one);
  append_view(&one, "q", op.selector);
  BSON_APPEND_INT32(&one, "limit", (op.flags & 1) ? 1 : 0);
  bson_append_document_end(&arr, &one);
  bson_append_array_end(&d, &arr);
  return bytes_of(&d);
}

wire::BsonBytes cursor_reply(const wire::OpReply& r, std::string_view ns, bool firstBatch) {
  Doc d;
  bson_t cursor;
  bson_append_document_begin(&d, "cursor", 6, &cursor);
  BSON_APPEND_INT64(&cursor, "id", r.cursorId);
  bson_append_utf8(&cursor, "ns", 2, ns.data(), len(ns));
  append_docs_array(&cursor, firstBatch ? "firstBatch" : "nextBatch", r.documents);
  bson_append_document_end(&d, &cursor);
  BSON_APPEND_DOUBLE(&d, "ok", 1.0);
  return bytes_of(&d);
}

wire::BsonBytes redacted_failure(wire::BsonView reply) {
  Doc d;
  bson_t doc;
  if (reply.init_static(&doc)) {
    bson_iter_t it;
    for (const char* key : {"code", "codeName", "errorLabels"}) {
      if (bson_iter_init_find(&it, &doc, key))
        bson_append_iter(&d, key, static_cast<int>(std::strlen(key)), &it);
    }
  }
  return bytes_of(&d);
}

std::int64_t reply_cursor_id(wire::BsonView reply) noexcept {
  wire::BsonElement id;
  if (!wire::BsonWalk::find_path(reply, "cursor.id", id)) return 0;
  if (id.type == wire::bson_type::kInt64) return id.as_int64();
  if (id.type == wire::bson_type::kInt32) return id.as_int32();
  return 0;
}

}  // namespace varanus::monitor::detail
