// Message builders: each writes a placeholder header, the body, then
// patches messageLength.
#include "varanus/wire/builder.hpp"

#include "bytes.hpp"
#include "varanus/wire/compression.hpp"

namespace varanus::wire {

using detail::put_i32;
using detail::put_i64;
using detail::put_u32;

namespace {

Frame start(std::int32_t requestId, std::int32_t responseTo, OpCode op) {
  Frame f;
  f.reserve(256);
  put_i32(f, 0);  // messageLength, patched by finish()
  put_i32(f, requestId);
  put_i32(f, responseTo);
  put_i32(f, static_cast<std::int32_t>(op));
  return f;
}

void finish(Frame& f) {
  detail::store_u32(f.data(), static_cast<std::uint32_t>(f.size()));
}

void put_cstring(Frame& f, std::string_view s) {
  f.insert(f.end(), s.begin(), s.end());
  f.push_back(0);
}

void put_doc(Frame& f, BsonView d) {
  if (d.data != nullptr) f.insert(f.end(), d.data, d.data + d.size);
}

}  // namespace

Frame build_op_msg(std::int32_t requestId, std::int32_t responseTo, std::uint32_t flagBits,
                   BsonView body, std::span<const DocumentSequence> sequences, bool checksum) {
  Frame f = start(requestId, responseTo, OpCode::msg);
  if (checksum) flagBits |= kChecksumPresent;
  put_u32(f, flagBits);
  f.push_back(0);  // kind 0: the body
  put_doc(f, body);
  for (const DocumentSequence& seq : sequences) {
    f.push_back(1);  // kind 1: size, identifier, documents
    const std::size_t size_at = f.size();
    put_i32(f, 0);
    put_cstring(f, seq.identifier);
    for (const BsonView& d : seq.documents) put_doc(f, d);
    detail::store_u32(f.data() + size_at, static_cast<std::uint32_t>(f.size() - size_at));
  }
  if (checksum) {
    put_u32(f, 0);  // room for the checksum: the length must count it
    finish(f);
    const std::uint32_t crc = crc32c({f.data(), f.size() - 4});
    detail::store_u32(f.data() + f.size() - 4, crc);
    return f;
  }
  finish(f);
  return f;
}

Frame build_op_query(std::int32_t requestId, std::int32_t responseTo, std::int32_t flags,
                     std::string_view fullCollectionName, std::int32_t numberToSkip,
                     std::int32_t numberToReturn, BsonView query,
                     std::optional<BsonView> returnFieldsSelector) {
  Frame f = start(requestId, responseTo, OpCode::query);
  put_i32(f, flags);
  put_cstring(f, fullCollectionName);
  put_i32(f, numberToSkip);
  put_i32(f, numberToReturn);
  put_doc(f, query);
  if (returnFieldsSelector) put_doc(f, *returnFieldsSelector);
  finish(f);
  return f;
}

Frame build_op_reply(std::int32_t requestId, std::int32_t responseTo, std::int32_t responseFlags,
                     std::int64_t cursorId, std::int32_t startingFrom,
                     std::span<const BsonView> documents) {
  Frame f = start(requestId, responseTo, OpCode::reply);
  put_i32(f, responseFlags);
  put_i64(f, cursorId);
  put_i32(f, startingFrom);
  put_i32(f, static_cast<std::int32_t>(documents.size()));
  for (const BsonView& d : documents) put_doc(f, d);
  finish(f);
  return f;
}

Result<Frame> build_op_compressed(std::span<const std::uint8_t> frame, Compressor c, int level) {
  auto h = read_header(frame);
  if (!h) return h.error();
  if (h->opCode == static_cast<std::int32_t>(OpCode::compressed)) {
    return detail::make_error(Errc::nested_compression, 12, "frame is already OP_COMPRESSED");
  }
  const auto body = frame.subspan(kHeaderSize);
  auto packed = compress(c, body, level);
  if (!packed) return packed.error();
  Frame f = start(h->requestId, h->responseTo, OpCode::compressed);
  put_i32(f, h->opCode);
  put_i32(f, static_cast<std::int32_t>(body.size()));
  f.push_back(static_cast<std::uint8_t>(c));
  f.insert(f.end(), packed->begin(), packed->end());
  finish(f);
  return f;
}

Frame build_op_get_more(std::int32_t requestId, std::string_view fullCollectionName,
                        std::int32_t numberToReturn, std::int64_t cursorId) {
  Frame f = start(requestId, 0, OpCode::get_more);
  put_i32(f, 0);  // ZERO
  put_cstring(f, fullCollectionName);
  put_i32(f, numberToReturn);
  put_i64(f, cursorId);
  finish(f);
  return f;
}

Frame build_op_kill_cursors(std::int32_t requestId, std::span<const std::int64_t> cursorIds) {
  Frame f = start(requestId, 0, OpCode::kill_cursors);
  put_i32(f, 0);  // ZERO
  put_i32(f, static_cast<std::int32_t>(cursorIds.size()));
  for (std::int64_t id : cursorIds) put_i64(f, id);
  finish(f);
  return f;
}

Frame build_op_insert(std::int32_t requestId, std::int32_t flags,
                      std::string_view fullCollectionName, std::span<const BsonView> documents) {
  Frame f = start(requestId, 0, OpCode::insert);
  put_i32(f, flags);
  put_cstring(f, fullCollectionName);
  for (const BsonView& d : documents) put_doc(f, d);
  finish(f);
  return f;
}

Frame build_op_update(std::int32_t requestId, std::string_view fullCollectionName,
                      std::int32_t flags, BsonView selector, BsonView update) {
  Frame f = start(requestId, 0, OpCode::update);
  put_i32(f, 0);  // ZERO
  put_cstring(f, fullCollectionName);
  put_i32(f, flags);
  put_doc(f, selector);
  put_doc(f, update);
  finish(f);
  return f;
}

Frame build_op_delete(std::int32_t requestId, std::string_view fullCollectionName,
                      std::int32_t flags, BsonView selector) {
  Frame f = start(requestId, 0, OpCode::del);
  put_i32(f, 0);  // ZERO
  put_cstring(f, fullCollectionName);
  put_i32(f, flags);
  put_doc(f, selector);
  finish(f);
  return f;
}

Frame build_op_command(std::int32_t requestId, std::string_view database,
                       std::string_view commandName, BsonView metadata, BsonView commandArgs,
                       std::span<const BsonView> inputDocs) {
  Frame f = start(requestId, 0, OpCode::command);
  put_cstring(f, database);
  put_cstring(f, commandName);
  put_doc(f, commandArgs);  // wire order: arguments, then metadata
  put_doc(f, metadata);
  for (const BsonView& d : inputDocs) put_doc(f, d);
  finish(f);
  return f;
}

Frame build_op_command_reply(std::int32_t requestId, std::int32_t responseTo, BsonView metadata,
                             BsonView commandReply, std::span<const BsonView> outputDocs) {
  Frame f = start(requestId, responseTo, OpCode::command_reply);
  put_doc(f, commandReply);  // wire order: reply, then metadata
  put_doc(f, metadata);
  for (const BsonView& d : outputDocs) put_doc(f, d);
  finish(f);
  return f;
}

}  // namespace varanus::wire
