// Upconversion of legacy opcodes to the commands drivers report for them
// (command monitoring spec, "legacy" rules). Internal to monitor.
#pragma once

#include <string_view>

#include "varanus/wire/message.hpp"

namespace varanus::monitor::detail {

wire::BsonBytes bytes_of(const bson_t* doc);
wire::BsonBytes copy_of(wire::BsonView doc);
/// `{}` as BSON.
wire::BsonBytes empty_document();

/// OP_QUERY on a collection namespace -> {find, filter, sort, projection, skip, limit|batchSize,
/// ...}.
wire::BsonBytes find_from_query(const wire::OpQuery& q);
/// OP_GET_MORE -> {getMore: cursorId, collection, batchSize}.
wire::BsonBytes getmore_from_op(const wire::OpGetMore& g);
/// OP_KILL_CURSORS -> {killCursors: "", cursors: [...]}, and its implied reply.
wire::BsonBytes killcursors_from_op(const wire::OpKillCursors& k);
wire::BsonBytes killcursors_reply(const wire::OpKillCursors& k);
wire::BsonBytes insert_from_op(const wire::OpInsert& op);
wire::BsonBytes update_from_op(const wire::OpUpdate& op);
wire::BsonBytes delete_from_op(const wire::OpDelete& op);
/// OP_REPLY to a legacy find/getMore -> {cursor: {id, ns, firstBatch|nextBatch}, ok: 1}.
wire::BsonBytes cursor_reply(const wire::OpReply& r, std::string_view ns, bool firstBatch);
/// {getMore: cursorId, collection} — the synthetic command of an exhaust stream.
wire::BsonBytes getmore_command(std::int64_t cursorId, std::string_view collection);
/// A failed reply reduced to code, codeName and errorLabels (redacted failures).
wire::BsonBytes redacted_failure(wire::BsonView reply);
/// {ok: 1} — the implied reply of an unacknowledged write.
wire::BsonBytes ok_reply();

/// The cursor id of a command reply's `cursor.id` (0 when absent).
std::int64_t reply_cursor_id(wire::BsonView reply) noexcept;

}  // namespace varanus::monitor::detail
