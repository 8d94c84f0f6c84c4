// varanus::wire — MongoDB wire messages decoded into views.
//
// decode() takes one complete frame (header + body, as FrameReader yields)
// and returns a Message whose views point into that frame — or, for
// OP_COMPRESSED, into bytes the Message owns. The caller keeps the frame
// alive while it uses the Message. Pure: no I/O, no allocation beyond the
// section/document index vectors and a decompression buffer.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/result.hpp"

namespace varanus::wire {

inline constexpr std::size_t kHeaderSize = 16;
/// mongod's default maxMessageSizeBytes.
inline constexpr std::int32_t kDefaultMaxMessageSize = 48'000'000;

enum class OpCode : std::int32_t {
  reply = 1,
  update = 2001,
  insert = 2002,
  query = 2004,
  get_more = 2005,
  del = 2006,
  kill_cursors = 2007,
  command = 2010,
  command_reply = 2011,
  compressed = 2012,
  msg = 2013,
};
/// "OP_MSG", "OP_QUERY", ...; "OP_UNKNOWN" for other numbers.
std::string_view opcode_name(std::int32_t opcode) noexcept;

enum class Compressor : std::uint8_t { noop = 0, snappy = 1, zlib = 2, zstd = 3 };
std::string_view to_string(Compressor c) noexcept;  ///< "noop", "snappy", "zlib", "zstd"
std::optional<Compressor> compressor_from_name(std::string_view name) noexcept;

struct Header {
  std::int32_t messageLength = 0;
  std::int32_t requestId = 0;
  std::int32_t responseTo = 0;
  std::int32_t opCode = 0;
};
/// Reads the 16-byte header; needs at least 16 bytes.
Result<Header> read_header(std::span<const std::uint8_t> bytes);

// OP_MSG flag bits.
inline constexpr std::uint32_t kChecksumPresent = 1u << 0;
inline constexpr std::uint32_t kMoreToCome = 1u << 1;
inline constexpr std::uint32_t kExhaustAllowed = 1u << 16;
/// Bits 0-15 the server requires to understand; bits 0 and 1 are known.
inline constexpr std::uint32_t kRequiredBitsMask = 0xFFFFu;

// OP_QUERY flags.
inline constexpr std::int32_t kQueryTailable = 1 << 1;
inline constexpr std::int32_t kQuerySecondaryOk = 1 << 2;
inline constexpr std::int32_t kQueryNoCursorTimeout = 1 << 4;
inline constexpr std::int32_t kQueryAwaitData = 1 << 5;
inline constexpr std::int32_t kQueryExhaust = 1 << 6;
inline constexpr std::int32_t kQueryPartial = 1 << 7;

// OP_REPLY responseFlags.
inline constexpr std::int32_t kReplyCursorNotFound = 1 << 0;
inline constexpr std::int32_t kReplyQueryFailure = 1 << 1;
inline constexpr std::int32_t kReplyAwaitCapable = 1 << 3;

struct DocumentSequence {
  std::string_view identifier;
  std::vector<BsonView> documents;
};

struct OpMsg {
  std::uint32_t flagBits = 0;
  BsonView body;                             ///< the one kind-0 section
  std::vector<DocumentSequence> sequences;   ///< kind-1 sections, in wire order
  std::size_t sectionCount = 0;              ///< kind 0 + kind 1 (+ kind 2) sections
  std::optional<std::uint32_t> checksum;     ///< present when checksumPresent
  std::uint32_t unknownRequiredBits = 0;     ///< bits 2..15 set (a server would reject them)

  bool checksumPresent() const noexcept { return flagBits & kChecksumPresent; }
  bool moreToCome() const noexcept { return flagBits & kMoreToCome; }
  bool exhaustAllowed() const noexcept { return flagBits & kExhaustAllowed; }
};

struct OpQuery {
  std::int32_t flags = 0;
  std::string_view fullCollectionName;  ///< "db.coll" or "db.$cmd"
  std::int32_t numberToSkip = 0;
  std::int32_t numberToReturn = 0;
  BsonView query;
  std::optional<BsonView> returnFieldsSelector;

  bool exhaust() const noexcept { return flags & kQueryExhaust; }
  bool isCommand() const noexcept;      ///< collection part is "$cmd"
  std::string_view database() const noexcept;    ///< before the first '.'
  std::string_view collection() const noexcept;  ///< after the first '.'
};

struct OpReply {
  std::int32_t responseFlags = 0;
  std::int64_t cursorId = 0;
  std::int32_t startingFrom = 0;
  std::int32_t numberReturned = 0;
  std::vector<BsonView> documents;

  bool queryFailure() const noexcept { return responseFlags & kReplyQueryFailure; }
  bool cursorNotFound() const noexcept { return responseFlags & kReplyCursorNotFound; }
};

/// OP_COMMAND (2010), MongoDB 3.2-3.6 internal/shell protocol.
struct OpCommand {
  std::string_view database;
  std::string_view commandName;
  BsonView metadata;
  BsonView commandArgs;
  std::vector<BsonView> inputDocs;
};

/// OP_COMMANDREPLY (2011).
struct OpCommandReply {
  BsonView metadata;
  BsonView commandReply;
  std::vector<BsonView> outputDocs;
};

struct OpInsert {  // 2001 legacy, removed in 6.0
  std::int32_t flags = 0;
  std::string_view fullCollectionName;
  std::vector<BsonView> documents;
};
struct OpUpdate {  // 2001
  std::string_view fullCollectionName;
  std::int32_t flags = 0;  ///< bit 0 upsert, bit 1 multi
  BsonView selector;
  BsonView update;
};
struct OpDelete {  // 2006
  std::string_view fullCollectionName;
  std::int32_t flags = 0;  ///< bit 0 single remove
  BsonView selector;
};
struct OpGetMore {  // 2005
  std::string_view fullCollectionName;
  std::int32_t numberToReturn = 0;
  std::int64_t cursorId = 0;
};
struct OpKillCursors {  // 2007
  std::vector<std::int64_t> cursorIds;
};
/// An opcode varanus does not know: not a framing error, reported with its number.
struct OpUnknown {};

using Body = std::variant<OpMsg, OpQuery, OpReply, OpCommand, OpCommandReply, OpInsert, OpUpdate,
                          OpDelete, OpGetMore, OpKillCursors, OpUnknown>;

struct Message {
  Header header;                        ///< the header on the wire (OP_COMPRESSED's own when compressed)
  std::int32_t opCode = 0;              ///< effective opcode: originalOpcode when compressed
  std::optional<Compressor> compressor; ///< set when the frame was OP_COMPRESSED
  Body body;

  Message() = default;
  Message(Message&&) noexcept = default;
  Message& operator=(Message&&) noexcept = default;
  // Views may point into `owned`; a copy would dangle, so copying is disabled.
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  /// Decompressed bytes (original message without header) for OP_COMPRESSED.
  std::vector<std::uint8_t> owned;
};

struct DecodeOptions {
  std::int32_t maxMessageSize = kDefaultMaxMessageSize;
  bool validateBson = true;    ///< walk every document (off on hot paths that only need a few keys)
  bool verifyChecksum = true;  ///< OP_MSG CRC-32C when checksumPresent
};

/// Decodes one complete frame (exactly messageLength bytes).
Result<Message> decode(std::span<const std::uint8_t> frame, const DecodeOptions& options = {});

/// CRC-32C (Castagnoli), as OP_MSG's checksum.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept;

}  // namespace varanus::wire
