// varanus::wire — message builders, for tests, the stub upstream and tools.
// Each returns one complete frame with a correct messageLength.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "varanus/wire/message.hpp"

namespace varanus::wire {

using Frame = std::vector<std::uint8_t>;

/// OP_MSG with a kind-0 body and optional kind-1 sequences (written after
/// the body). With checksum=true, sets checksumPresent and appends CRC-32C.
Frame build_op_msg(std::int32_t requestId, std::int32_t responseTo, std::uint32_t flagBits,
                   BsonView body, std::span<const DocumentSequence> sequences = {},
                   bool checksum = false);

Frame build_op_query(std::int32_t requestId, std::int32_t responseTo, std::int32_t flags,
                     std::string_view fullCollectionName, std::int32_t numberToSkip,
                     std::int32_t numberToReturn, BsonView query,
                     std::optional<BsonView> returnFieldsSelector = std::nullopt);

Frame build_op_reply(std::int32_t requestId, std::int32_t responseTo, std::int32_t responseFlags,
                     std::int64_t cursorId, std::int32_t startingFrom,
                     std::span<const BsonView> documents);

/// Wraps a complete frame as OP_COMPRESSED with the same requestId/responseTo.
Result<Frame> build_op_compressed(std::span<const std::uint8_t> frame, Compressor c,
                                  int level = -1);

// Legacy opcodes (tests and the stub's 4.x-era replies).
Frame build_op_get_more(std::int32_t requestId, std::string_view fullCollectionName,
                        std::int32_t numberToReturn, std::int64_t cursorId);
Frame build_op_kill_cursors(std::int32_t requestId, std::span<const std::int64_t> cursorIds);
Frame build_op_insert(std::int32_t requestId, std::int32_t flags,
                      std::string_view fullCollectionName, std::span<const BsonView> documents);
Frame build_op_update(std::int32_t requestId, std::string_view fullCollectionName,
                      std::int32_t flags, BsonView selector, BsonView update);
Frame build_op_delete(std::int32_t requestId, std::string_view fullCollectionName,
                      std::int32_t flags, BsonView selector);
Frame build_op_command(std::int32_t requestId, std::string_view database,
                       std::string_view commandName, BsonView metadata, BsonView commandArgs,
                       std::span<const BsonView> inputDocs = {});
Frame build_op_command_reply(std::int32_t requestId, std::int32_t responseTo, BsonView metadata,
                             BsonView commandReply, std::span<const BsonView> outputDocs = {});

}  // namespace varanus::wire
