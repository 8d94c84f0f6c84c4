// Decoding of complete frames into Message views. Every read goes through
// detail::Cursor, which checks bounds first; every failure is an Error
// naming the cause and the offset inside the frame.
#include <array>
#include <cstdio>
#include <string>

#include "bytes.hpp"
#include "varanus/wire/compression.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::wire {

using detail::Cursor;
using detail::make_error;

std::string_view opcode_name(std::int32_t opcode) noexcept {
  switch (opcode) {
    case 1:
      return "OP_REPLY";
    case 2001:
      return "OP_UPDATE";
    case 2002:
      return "OP_INSERT";
    case 2004:
      return "OP_QUERY";
    case 2005:
      return "OP_GET_MORE";
    case 2006:
      return "OP_DELETE";
    case 2007:
      return "OP_KILL_CURSORS";
    case 2010:
      return "OP_COMMAND";
    case 2011:
      return "OP_COMMANDREPLY";
    case 2012:
      return "OP_COMPRESSED";
    case 2013:
      return "OP_MSG";
    default:
      return "OP_UNKNOWN";
  }
}

std::string_view to_string(Compressor c) noexcept {
  switch (c) {
    case Compressor::noop:
      return "noop";
    case Compressor::snappy:
      return "snappy";
    case Compressor::zlib:
      return "zlib";
    case Compressor::zstd:
      return "zstd";
  }
  return "unknown";
}

std::optional<Compressor> compressor_from_name(std::string_view name) noexcept {
  if (name == "noop") return Compressor::noop;
  if (name == "snappy") return Compressor::snappy;
  if (name == "zlib") return Compressor::zlib;
  if (name == "zstd") return Compressor::zstd;
  return std::nullopt;
}

Result<Header> read_header(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) {
    return make_error(Errc::truncated, 0,
                      "header needs 16 bytes, " + std::to_string(bytes.size()) + " present");
  }
  const std::uint8_t* p = bytes.data();
  return Header{detail::load_i32(p), detail::load_i32(p + 4), detail::load_i32(p + 8),
                detail::load_i32(p + 12)};
}

bool OpQuery::isCommand() const noexcept {
  return collection() == "$cmd";
}

std::string_view OpQuery::database() const noexcept {
  const auto dot = fullCollectionName.find('.');
  return dot == std::string_view::npos ? fullCollectionName : fullCollectionName.substr(0, dot);
}

std::string_view OpQuery::collection() const noexcept {
  const auto dot = fullCollectionName.find('.');
  return dot == std::string_view::npos ? std::string_view{} : fullCollectionName.substr(dot + 1);
}

// ---------------------------------------------------------------- CRC-32C
namespace {

// Slicing-by-8 tables for the reflected Castagnoli polynomial, built at
// compile time (a constant, not mutable global state).
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[0][i] = c;
  }
  for (std::uint32_t i = 0; i < 256; ++i) {
    for (std::size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  }
  return t;
}
constexpr auto kCrcTables = make_crc_tables();

}  // namespace

std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc) noexcept {
  const auto& t = kCrcTables;
  std::uint32_t c = ~crc;
  const std::uint8_t* p = bytes.data();
  std::size_t n = bytes.size();
  while (n >= 8) {
    const std::uint32_t lo = detail::load_u32(p) ^ c;
    const std::uint32_t hi = detail::load_u32(p + 4);
    c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFFu] ^ t[2][(hi >> 8) & 0xFFu] ^ t[1][(hi >> 16) & 0xFFu] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFFu];
  return ~c;
}

// ---------------------------------------------------------------- opcodes
namespace {

struct Ctx {
  const DecodeOptions& opt;
  Error err;
};

// Documents back to back until the cursor's end.
bool read_docs(Cursor& c, std::vector<BsonView>& docs, const char* what, Ctx& x) {
  while (!c.at_end()) {
    BsonView v;
    if (!c.bson(v, what, x.opt.validateBson, Errc::truncated, x.err)) return false;
    docs.push_back(v);
  }
  return true;
}

bool expect_end(const Cursor& c, Ctx& x) {
  if (c.at_end()) return true;
  x.err = make_error(Errc::trailing_bytes, c.offset(),
                     std::to_string(c.remaining()) + " bytes after the last field");
  return false;
}

/// OP_MSG body: `c` covers flagBits..end of message. `header_crc` is the
/// CRC-32C of the 16 header bytes (for the checksum, which covers them).
bool decode_msg(Cursor c, std::uint32_t header_crc, OpMsg& m, Ctx& x) {
  if (!c.u32(m.flagBits, "OP_MSG flagBits", x.err)) return false;
  m.unknownRequiredBits = m.flagBits & kRequiredBitsMask & ~(kChecksumPresent | kMoreToCome);
  std::size_t end = c.pos() + c.remaining();
  if (m.checksumPresent()) {
    if (c.remaining() < 4) {
      x.err =
          make_error(Errc::truncated, c.offset(), "checksumPresent but no room for the checksum");
      return false;
    }
    end -= 4;
    const std::uint8_t* sum = c.here() + (end - c.pos());
    m.checksum = detail::load_u32(sum);
    if (x.opt.verifyChecksum) {
      // Everything before the checksum: the header, then flagBits and sections.
      const std::uint8_t* first = c.here() - c.pos();
      const std::uint32_t computed = crc32c({first, end}, header_crc);
      if (computed != *m.checksum) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "checksum 0x%08x, computed 0x%08x", *m.checksum, computed);
        x.err = make_error(Errc::bad_checksum, c.offset() + (end - c.pos()), buf);
        return false;
      }
    }
  }
  // The sections are what lies between the flags and the checksum.
  Cursor s({c.here(), end - c.pos()}, c.offset());
  bool have_body = false;
  while (!s.at_end()) {
    const std::size_t kind_at = s.offset();
    std::uint8_t kind = 0;
    s.u8(kind, "section kind", x.err);
    if (kind == 0) {
      if (have_body) {
        x.err = make_error(Errc::duplicate_body, kind_at, "a second kind-0 section");
        return false;
      }
      if (!s.bson(m.body, "kind-0 body", x.opt.validateBson, Errc::section_overrun, x.err))
        return false;
      have_body = true;
    } else if (kind == 1 || kind == 2) {
      std::int32_t size = 0;
      if (s.remaining() < 4) {
        x.err = make_error(Errc::section_overrun, s.offset(),
                           "kind-" + std::to_string(kind) + " size field runs past the message");
        return false;
      }
      const std::size_t size_at = s.offset();
      s.i32(size, "section size", x.err);
      if (size < 4 || static_cast<std::size_t>(size) - 4 > s.remaining()) {
        x.err = make_error(Errc::section_overrun, size_at,
                           "kind-" + std::to_string(kind) + " size " + std::to_string(size) + ", " +
                               std::to_string(s.remaining() + 4) + " bytes left");
        return false;
      }
      const std::size_t payload = static_cast<std::size_t>(size) - 4;
      if (kind == 2) {  // multitenancy only: accepted and skipped
        s.skip(payload);
      } else {
        Cursor q({s.here(), payload}, s.offset());
        DocumentSequence seq;
        if (!q.cstring(seq.identifier, "kind-1 identifier", x.err)) return false;
        while (!q.at_end()) {
          BsonView v;
          if (!q.bson(v, "kind-1 document", x.opt.validateBson, Errc::section_overrun, x.err))
            return false;
          seq.documents.push_back(v);
        }
        m.sequences.push_back(std::move(seq));
        s.skip(payload);
      }
    } else {
      x.err =
          make_error(Errc::unknown_section_kind, kind_at, "section kind " + std::to_string(kind));
      return false;
    }
    ++m.sectionCount;
  }
  if (!have_body) {
    x.err = make_error(Errc::missing_body, s.offset(), "no kind-0 section");
    return false;
  }
  return true;
}

bool decode_query(Cursor c, OpQuery& q, Ctx& x) {
  if (!c.i32(q.flags, "OP_QUERY flags", x.err)) return false;
  if (!c.cstring(q.fullCollectionName, "fullCollectionName", x.err)) return false;
  if (!c.i32(q.numberToSkip, "numberToSkip", x.err)) return false;
  if (!c.i32(q.numberToReturn, "numberToReturn", x.err)) return false;
  if (!c.bson(q.query, "query", x.opt.validateBson, Errc::truncated, x.err)) return false;
  if (!c.at_end()) {
    BsonView sel;
    if (!c.bson(sel, "returnFieldsSelector", x.opt.validateBson, Errc::truncated, x.err))
      return false;
    q.returnFieldsSelector = sel;
  }
  return expect_end(c, x);
}

bool decode_reply(Cursor c, OpReply& r, Ctx& x) {
  if (!c.i32(r.responseFlags, "responseFlags", x.err)) return false;
  if (!c.i64(r.cursorId, "cursorID", x.err)) return false;
  if (!c.i32(r.startingFrom, "startingFrom", x.err)) return false;
  const std::size_t nr_at = c.offset();
  if (!c.i32(r.numberReturned, "numberReturned", x.err)) return false;
  if (r.numberReturned < 0) {
    x.err = make_error(Errc::invalid_field, nr_at,
                       "numberReturned " + std::to_string(r.numberReturned));
    return false;
  }
  return read_docs(c, r.documents, "reply document", x);
}

bool decode_command(Cursor c, OpCommand& m, Ctx& x) {
  if (!c.cstring(m.database, "database", x.err)) return false;
  if (!c.cstring(m.commandName, "commandName", x.err)) return false;
  // The server (3.2-3.6 rpc/op_command) reads the command arguments first,
  // then the metadata, then input documents.
  if (!c.bson(m.commandArgs, "commandArgs", x.opt.validateBson, Errc::truncated, x.err))
    return false;
  if (!c.bson(m.metadata, "metadata", x.opt.validateBson, Errc::truncated, x.err)) return false;
  return read_docs(c, m.inputDocs, "inputDoc", x);
}

bool decode_command_reply(Cursor c, OpCommandReply& m, Ctx& x) {
  if (!c.bson(m.commandReply, "commandReply", x.opt.validateBson, Errc::truncated, x.err))
    return false;
  if (!c.bson(m.metadata, "metadata", x.opt.validateBson, Errc::truncated, x.err)) return false;
  return read_docs(c, m.outputDocs, "outputDoc", x);
}

bool decode_update(Cursor c, OpUpdate& m, Ctx& x) {
  std::int32_t zero = 0;
  if (!c.i32(zero, "ZERO", x.err)) return false;
  if (!c.cstring(m.fullCollectionName, "fullCollectionName", x.err)) return false;
  if (!c.i32(m.flags, "flags", x.err)) return false;
  if (!c.bson(m.selector, "selector", x.opt.validateBson, Errc::truncated, x.err)) return false;
  if (!c.bson(m.update, "update", x.opt.validateBson, Errc::truncated, x.err)) return false;
  return expect_end(c, x);
}

bool decode_insert(Cursor c, OpInsert& m, Ctx& x) {
  if (!c.i32(m.flags, "flags", x.err)) return false;
  if (!c.cstring(m.fullCollectionName, "fullCollectionName", x.err)) return false;
  return read_docs(c, m.documents, "document", x);
}

bool decode_get_more(Cursor c, OpGetMore& m, Ctx& x) {
  std::int32_t zero = 0;
  if (!c.i32(zero, "ZERO", x.err)) return false;
  if (!c.cstring(m.fullCollectionName, "fullCollectionName", x.err)) return false;
  if (!c.i32(m.numberToReturn, "numberToReturn", x.err)) return false;
  if (!c.i64(m.cursorId, "cursorID", x.err)) return false;
  return expect_end(c, x);
}

bool decode_delete(Cursor c, OpDelete& m, Ctx& x) {
  std::int32_t zero = 0;
  if (!c.i32(zero, "ZERO", x.err)) return false;
  if (!c.cstring(m.fullCollectionName, "fullCollectionName", x.err)) return false;
  if (!c.i32(m.flags, "flags", x.err)) return false;
  if (!c.bson(m.selector, "selector", x.opt.validateBson, Errc::truncated, x.err)) return false;
  return expect_end(c, x);
}

bool decode_kill_cursors(Cursor c, OpKillCursors& m, Ctx& x) {
  std::int32_t zero = 0;
  std::int32_t n = 0;
  if (!c.i32(zero, "ZERO", x.err)) return false;
  const std::size_t n_at = c.offset();
  if (!c.i32(n, "numberOfCursorIDs", x.err)) return false;
  if (n < 0 || static_cast<std::size_t>(n) > c.remaining() / 8) {
    x.err = make_error(Errc::invalid_field, n_at,
                       "numberOfCursorIDs " + std::to_string(n) + " does not fit the message");
    return false;
  }
  m.cursorIds.reserve(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) {
    std::int64_t id = 0;
    c.i64(id, "cursorID", x.err);
    m.cursorIds.push_back(id);
  }
  return expect_end(c, x);
}

/// Decodes the body of `opcode` from `c` into `out`.
bool decode_body(std::int32_t opcode, Cursor c, std::uint32_t header_crc, Body& out, Ctx& x) {
  switch (opcode) {
    case static_cast<std::int32_t>(OpCode::msg):
      return decode_msg(c, header_crc, out.emplace<OpMsg>(), x);
    case static_cast<std::int32_t>(OpCode::query):
      return decode_query(c, out.emplace<OpQuery>(), x);
    case static_cast<std::int32_t>(OpCode::reply):
      return decode_reply(c, out.emplace<OpReply>(), x);
    case static_cast<std::int32_t>(OpCode::command):
      return decode_command(c, out.emplace<OpCommand>(), x);
    case static_cast<std::int32_t>(OpCode::command_reply):
      return decode_command_reply(c, out.emplace<OpCommandReply>(), x);
    case static_cast<std::int32_t>(OpCode::update):
      return decode_update(c, out.emplace<OpUpdate>(), x);
    case static_cast<std::int32_t>(OpCode::insert):
      return decode_insert(c, out.emplace<OpInsert>(), x);
    case static_cast<std::int32_t>(OpCode::get_more):
      return decode_get_more(c, out.emplace<OpGetMore>(), x);
    case static_cast<std::int32_t>(OpCode::del):
      return decode_delete(c, out.emplace<OpDelete>(), x);
    case static_cast<std::int32_t>(OpCode::kill_cursors):
      return decode_kill_cursors(c, out.emplace<OpKillCursors>(), x);
    default:
      out.emplace<OpUnknown>();
      return true;
  }
}

}  // namespace

Result<Message> decode(std::span<const std::uint8_t> frame, const DecodeOptions& options) {
  auto h = read_header(frame);
  if (!h) return h.error();
  const Header& hdr = *h;
  if (hdr.messageLength <= static_cast<std::int32_t>(kHeaderSize)) {
    return make_error(Errc::length_too_small, 0,
                      "messageLength " + std::to_string(hdr.messageLength) + " <= 16");
  }
  if (hdr.messageLength > options.maxMessageSize) {
    return make_error(Errc::length_too_large, 0,
                      "messageLength " + std::to_string(hdr.messageLength) + " > maximum " +
                          std::to_string(options.maxMessageSize));
  }
  const auto len = static_cast<std::size_t>(hdr.messageLength);
  if (frame.size() < len) {
    return make_error(Errc::truncated, frame.size(),
                      "messageLength " + std::to_string(len) + ", " + std::to_string(frame.size()) +
                          " bytes present");
  }
  if (frame.size() > len) {
    return make_error(Errc::trailing_bytes, len,
                      std::to_string(frame.size() - len) + " bytes after messageLength");
  }

  Message m;
  m.header = hdr;
  m.opCode = hdr.opCode;
  Ctx x{options, {}};
  const auto body = frame.subspan(kHeaderSize);

  if (hdr.opCode != static_cast<std::int32_t>(OpCode::compressed)) {
    // The header's CRC only when a checksum will be verified (rare: drivers
    // seldom send one), not for every message.
    const bool checked = options.verifyChecksum &&
                         hdr.opCode == static_cast<std::int32_t>(OpCode::msg) && body.size() >= 4 &&
                         (detail::load_u32(body.data()) & kChecksumPresent) != 0;
    const std::uint32_t header_crc = checked ? crc32c(frame.first(kHeaderSize)) : 0;
    if (!decode_body(hdr.opCode, Cursor(body, kHeaderSize), header_crc, m.body, x)) return x.err;
    return m;
  }

  // OP_COMPRESSED: originalOpcode, uncompressedSize, compressorId, payload.
  Cursor c(body, kHeaderSize);
  std::int32_t original = 0;
  std::int32_t usize = 0;
  std::uint8_t cid = 0;
  if (!c.i32(original, "originalOpcode", x.err)) return x.err;
  const std::size_t usize_at = c.offset();
  if (!c.i32(usize, "uncompressedSize", x.err)) return x.err;
  const std::size_t cid_at = c.offset();
  if (!c.u8(cid, "compressorId", x.err)) return x.err;
  if (original == static_cast<std::int32_t>(OpCode::compressed)) {
    return make_error(Errc::nested_compression, kHeaderSize, "originalOpcode is OP_COMPRESSED");
  }
  if (usize < 0) {
    return make_error(Errc::invalid_field, usize_at, "uncompressedSize " + std::to_string(usize));
  }
  // The original message (header + uncompressedSize) must obey the same
  // bound as any frame: checked here, before a byte is allocated.
  if (static_cast<std::int64_t>(usize) + static_cast<std::int64_t>(kHeaderSize) >
      options.maxMessageSize) {
    return make_error(Errc::uncompressed_size_too_large, usize_at,
                      "uncompressedSize " + std::to_string(usize) + " + 16 > maximum " +
                          std::to_string(options.maxMessageSize));
  }
  if (cid > 3) {
    return make_error(Errc::unknown_compressor, cid_at, "compressorId " + std::to_string(cid));
  }
  const auto comp = static_cast<Compressor>(cid);
  m.compressor = comp;
  m.opCode = original;
  auto out = decompress(comp, {c.here(), c.remaining()}, static_cast<std::size_t>(usize),
                        static_cast<std::size_t>(options.maxMessageSize) - kHeaderSize);
  if (!out) {
    Error e = out.error();
    e.offset = c.offset();
    return e;
  }
  m.owned = std::move(out.value());
  // The original header is not on the wire; the checksum of a compressed
  // OP_MSG covers the header the sender built: same ids, original opcode.
  std::uint32_t header_crc = 0;
  if (original == static_cast<std::int32_t>(OpCode::msg) && options.verifyChecksum &&
      m.owned.size() >= 4 && (detail::load_u32(m.owned.data()) & kChecksumPresent) != 0) {
    std::uint8_t oh[kHeaderSize];
    detail::store_u32(oh, static_cast<std::uint32_t>(usize) + kHeaderSize);
    detail::store_u32(oh + 4, static_cast<std::uint32_t>(hdr.requestId));
    detail::store_u32(oh + 8, static_cast<std::uint32_t>(hdr.responseTo));
    detail::store_u32(oh + 12, static_cast<std::uint32_t>(original));
    header_crc = crc32c({oh, kHeaderSize});
  }
  // Offsets inside the decompressed payload are reported as if the original
  // message stood in place of the frame (16 + position in the payload).
  if (!decode_body(original, Cursor(m.owned, kHeaderSize), header_crc, m.body, x)) {
    x.err.detail += " (inside the decompressed " + std::string(to_string(comp)) + " payload)";
    return x.err;
  }
  return m;
}

}  // namespace varanus::wire
