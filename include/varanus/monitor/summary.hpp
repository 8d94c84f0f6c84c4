// varanus::monitor — what a command names and what its reply says, in the
// few fields a slow-query log shows (pure: bytes in, values out).
#pragma once

#include <string_view>

#include "varanus/monitor/event.hpp"
#include "varanus/wire/bson_view.hpp"

namespace varanus::monitor {

/// The collection a command names: the (string) value of its first element
/// for find, insert, update, delete, aggregate, count, distinct,
/// findAndModify, create, drop, createIndexes, dropIndexes, listIndexes,
/// collMod and killCursors; getMore's `collection` field. Empty otherwise
/// (aggregate: 1, a database command). Reads one or two elements.
std::string_view command_collection(std::string_view commandName, wire::BsonView body) noexcept;

/// "coll" of a "db.coll" namespace ("" when there is no dot).
std::string_view namespace_collection(std::string_view ns) noexcept;

/// Reads a reply's summary: the batch size of `cursor.firstBatch` /
/// `cursor.nextBatch` and `cursor.id`; `n`, `nModified`, the entries of
/// `upserted` and `writeErrors`. Write commands (insert, update, delete)
/// get 0 for counts their reply leaves out; a delete's `n` is also its
/// nRemoved. Walks the top-level elements and the batch's element headers.
ReplySummary summarize_reply(std::string_view commandName, wire::BsonView reply) noexcept;

}  // namespace varanus::monitor
