// Hello replies with their member addresses replaced (see the header).
#include "varanus/wire/hello_rewrite.hpp"

#include <bson/bson.h>

#include <algorithm>
#include <cctype>
#include <string_view>

#include "bytes.hpp"
#include "varanus/wire/bson_walk.hpp"

namespace varanus::wire {

namespace {

bool is_address_array(std::string_view key) {
  return key == "hosts" || key == "passives" || key == "arbiters";
}
bool is_address_string(std::string_view key) {
  return key == "primary" || key == "me";
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// The advertised address of `address`, or nullptr (and `address` noted as
/// unknown).
const std::string* lookup(std::string_view address, const AddressMap& map, HelloRewrite& out) {
  const std::string key = lower(address);
  if (auto it = map.find(key); it != map.end()) return &it->second;
  if (std::find(out.unknown.begin(), out.unknown.end(), key) == out.unknown.end()) {
    out.unknown.push_back(key);
  }
  return nullptr;
}

/// A copy of `doc` with its address fields mapped; nullopt when nothing
/// was replaced.
std::optional<BsonBytes> rewrite_document(BsonView doc, const AddressMap& map, HelloRewrite& out) {
  if (!is_hello_reply(doc)) return std::nullopt;
  bson_t in;
  bson_iter_t it;
  if (!doc.init_static(&in) || !bson_iter_init(&it, &in)) return std::nullopt;
  bson_t built;
  bson_init(&built);
  bson_t* result = &built;
  std::size_t replaced = 0;
  while (bson_iter_next(&it)) {
    const char* key = bson_iter_key(&it);
    const std::uint32_t keyLen = bson_iter_key_len(&it);
    const std::string_view k(key, keyLen);
    if (is_address_string(k) && BSON_ITER_HOLDS_UTF8(&it)) {
      std::uint32_t len = 0;
      const char* s = bson_iter_utf8(&it, &len);
      if (const std::string* to = lookup({s, len}, map, out)) {
        bson_append_utf8(result, key, static_cast<int>(keyLen), to->data(),
                         static_cast<int>(to->size()));
        ++replaced;
        continue;
      }
    } else if (is_address_array(k) && BSON_ITER_HOLDS_ARRAY(&it)) {
      bson_iter_t child;
      if (bson_iter_recurse(&it, &child)) {
        bson_t array;
        bson_append_array_begin(result, key, static_cast<int>(keyLen), &array);
        while (bson_iter_next(&child)) {
          const std::string* to = nullptr;
          if (BSON_ITER_HOLDS_UTF8(&child)) {
            std::uint32_t len = 0;
            const char* s = bson_iter_utf8(&child, &len);
            to = lookup({s, len}, map, out);
          }
          if (to != nullptr) {
            bson_append_utf8(&array, bson_iter_key(&child),
                             static_cast<int>(bson_iter_key_len(&child)), to->data(),
                             static_cast<int>(to->size()));
            ++replaced;
          } else {
            bson_append_iter(&array, nullptr, 0, &child);
          }
        }
        bson_append_array_end(result, &array);
        continue;
      }
    }
    bson_append_iter(result, key, static_cast<int>(keyLen), &it);
  }
  std::optional<BsonBytes> bytes;
  if (replaced != 0) {
    out.replaced += replaced;
    const std::uint8_t* data = bson_get_data(result);
    bytes.emplace(data, data + result->len);
  }
  bson_destroy(result);
  return bytes;
}

/// `frame` with the documents in `docs` (views into it) replaced where
/// rewrite_document had something to replace; nullopt when none had.
/// `checksum`: the frame ends with an OP_MSG CRC-32C to recompute.
std::optional<Frame> splice(std::span<const std::uint8_t> frame, std::span<const BsonView> docs,
                            bool checksum, const AddressMap& map, HelloRewrite& out) {
  std::optional<Frame> result;
  std::size_t copied = 0;  // bytes of `frame` already in result
  for (const BsonView& d : docs) {
    const std::optional<BsonBytes> doc = rewrite_document(d, map, out);
    if (!doc) continue;
    if (!result) {
      result.emplace();
      result->reserve(frame.size() + 256);
    }
    const auto at = static_cast<std::size_t>(d.data - frame.data());
    result->insert(result->end(), frame.begin() + static_cast<std::ptrdiff_t>(copied),
                   frame.begin() + static_cast<std::ptrdiff_t>(at));
    result->insert(result->end(), doc->begin(), doc->end());
    copied = at + d.size;
  }
  if (!result) return std::nullopt;
  const std::size_t end = frame.size() - (checksum ? 4 : 0);
  result->insert(result->end(), frame.begin() + static_cast<std::ptrdiff_t>(copied),
                 frame.begin() + static_cast<std::ptrdiff_t>(end));
  if (checksum) detail::put_u32(*result, 0);
  detail::store_u32(result->data(), static_cast<std::uint32_t>(result->size()));
  if (checksum) {
    const std::uint32_t crc = crc32c({result->data(), result->size() - 4});
    detail::store_u32(result->data() + result->size() - 4, crc);
  }
  return result;
}

/// The documents of an uncompressed message that may hold a hello reply.
std::vector<BsonView> reply_documents(const Message& m) {
  if (const auto* msg = std::get_if<OpMsg>(&m.body)) return {msg->body};
  if (const auto* reply = std::get_if<OpReply>(&m.body)) return reply->documents;
  return {};
}

bool has_checksum(const Message& m) {
  const auto* msg = std::get_if<OpMsg>(&m.body);
  return msg != nullptr && msg->checksumPresent();
}

}  // namespace

bool is_hello_reply(BsonView doc) noexcept {
  BsonWalk walk(doc);
  for (BsonElement e; walk.next(e);) {
    if (e.key == "isWritablePrimary" || e.key == "ismaster") return true;
  }
  return false;
}

Result<HelloRewrite> rewrite_hello(std::span<const std::uint8_t> frame, const AddressMap& map,
                                   std::int32_t maxMessageSize) {
  HelloRewrite out;
  auto h = read_header(frame);
  if (!h) return h.error();
  if (h->opCode != static_cast<std::int32_t>(OpCode::msg) &&
      h->opCode != static_cast<std::int32_t>(OpCode::reply) &&
      h->opCode != static_cast<std::int32_t>(OpCode::compressed)) {
    return out;  // not a reply that can carry a hello
  }
  DecodeOptions options;
  options.maxMessageSize = maxMessageSize;
  auto m = decode(frame, options);
  if (!m) return m.error();
  const std::vector<BsonView> docs = reply_documents(*m);
  if (!m->compressor) {
    out.frame = splice(frame, docs, has_checksum(*m), map, out);
    return out;
  }
  // OP_COMPRESSED: the original message is rebuilt (its header as the
  // sender built it: same ids, the original opcode), rewritten, and
  // compressed again with the same compressor.
  Frame inner;
  inner.reserve(kHeaderSize + m->owned.size());
  detail::put_u32(inner, static_cast<std::uint32_t>(kHeaderSize + m->owned.size()));
  detail::put_i32(inner, m->header.requestId);
  detail::put_i32(inner, m->header.responseTo);
  detail::put_i32(inner, m->opCode);
  inner.insert(inner.end(), m->owned.begin(), m->owned.end());
  // The views point into m->owned; the same documents sit 16 bytes into
  // `inner`.
  std::vector<BsonView> innerDocs;
  innerDocs.reserve(docs.size());
  for (const BsonView& d : docs) {
    innerDocs.push_back(
        {inner.data() + kHeaderSize + static_cast<std::size_t>(d.data - m->owned.data()), d.size});
  }
  auto rewritten = splice(inner, innerDocs, has_checksum(*m), map, out);
  if (!rewritten) return out;
  auto packed = build_op_compressed(*rewritten, *m->compressor);
  if (!packed) return packed.error();
  out.frame = std::move(packed.value());
  return out;
}

}  // namespace varanus::wire
