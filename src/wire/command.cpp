// The command view: what command monitoring calls commandName, databaseName
// and command, from whichever opcode carried the request.
#include "varanus/wire/command.hpp"

#include <cstring>
#include <string>

#include "bytes.hpp"

namespace varanus::wire {

using detail::make_error;

std::string_view first_key(BsonView doc) noexcept {
  bson_t b;
  if (!doc.init_static(&b)) return {};
  bson_iter_t it;
  if (!bson_iter_init(&it, &b) || !bson_iter_next(&it)) return {};
  return {bson_iter_key(&it), bson_iter_key_len(&it)};
}

namespace {

// The document value of `key` in `doc`, if it has one.
std::optional<BsonView> subdocument(BsonView doc, std::string_view key) noexcept {
  bson_t b;
  if (!doc.init_static(&b)) return std::nullopt;
  bson_iter_t it;
  if (!bson_iter_init(&it, &b)) return std::nullopt;
  while (bson_iter_next(&it)) {
    if (std::string_view(bson_iter_key(&it), bson_iter_key_len(&it)) != key) continue;
    if (!BSON_ITER_HOLDS_DOCUMENT(&it)) return std::nullopt;
    std::uint32_t len = 0;
    const std::uint8_t* data = nullptr;
    bson_iter_document(&it, &len, &data);
    if (data == nullptr) return std::nullopt;
    return BsonView{data, len};
  }
  return std::nullopt;
}

std::string_view string_field(BsonView doc, std::string_view key) noexcept {
  bson_t b;
  if (!doc.init_static(&b)) return {};
  bson_iter_t it;
  if (!bson_iter_init(&it, &b)) return {};
  while (bson_iter_next(&it)) {
    if (std::string_view(bson_iter_key(&it), bson_iter_key_len(&it)) != key) continue;
    if (!BSON_ITER_HOLDS_UTF8(&it)) return {};
    std::uint32_t len = 0;
    const char* s = bson_iter_utf8(&it, &len);
    return s ? std::string_view(s, len) : std::string_view{};
  }
  return {};
}

}  // namespace

Result<CommandView> command_view(const Message& message) {
  CommandView v;
  v.compressor = message.compressor;
  v.opCode = message.opCode;
  if (const auto* m = std::get_if<OpMsg>(&message.body)) {
    v.body = m->body;
    v.database = string_field(m->body, "$db");
    v.sequences = &m->sequences;
    v.flagBits = m->flagBits;
    v.moreToCome = m->moreToCome();
    v.exhaustAllowed = m->exhaustAllowed();
    v.checksumPresent = m->checksumPresent();
  } else if (const auto* q = std::get_if<OpQuery>(&message.body)) {
    if (!q->isCommand()) {
      return make_error(
          Errc::invalid_field, kHeaderSize + 4,
          "OP_QUERY on collection " + std::string(q->fullCollectionName) + " is not a command");
    }
    v.body = q->query;
    // Through mongos a command may be wrapped: {$query: {...}, $readPreference: ...}.
    if (auto inner = subdocument(q->query, "$query")) {
      v.body = *inner;
    } else if (first_key(q->query) == "query") {
      if (auto inner2 = subdocument(q->query, "query")) v.body = *inner2;
    }
    v.database = string_field(v.body, "$db");
    if (v.database.empty()) v.database = q->database();
    v.moreToCome = false;
    v.exhaustAllowed = q->exhaust();
  } else if (const auto* c = std::get_if<OpCommand>(&message.body)) {
    v.body = c->commandArgs;
    v.database = c->database;
    v.name = c->commandName;
  } else {
    return make_error(Errc::invalid_field, 12,
                      std::string(opcode_name(message.opCode)) + " (" +
                          std::to_string(message.opCode) + ") carries no command");
  }
  if (v.name.empty()) v.name = first_key(v.body);
  if (v.name.empty()) return make_error(Errc::invalid_field, kHeaderSize, "empty command body");
  return v;
}

BsonBytes merged_command(const CommandView& view) {
  static constexpr std::uint8_t kEmpty[5] = {5, 0, 0, 0, 0};
  bson_t body;
  if (!view.body.init_static(&body)) return BsonBytes(std::begin(kEmpty), std::end(kEmpty));
  if (view.sequences == nullptr || view.sequences->empty()) {
    auto b = view.body.bytes();
    return BsonBytes(b.begin(), b.end());
  }
  bson_t out;
  bson_init(&out);
  bson_concat(&out, &body);
  for (const DocumentSequence& seq : *view.sequences) {
    bson_t arr;
    bson_append_array_begin(&out, seq.identifier.data(), static_cast<int>(seq.identifier.size()),
                            &arr);
    char keybuf[16];
    std::uint32_t i = 0;
    for (const BsonView& d : seq.documents) {
      const char* key = nullptr;
      const std::size_t klen = bson_uint32_to_string(i++, &key, keybuf, sizeof keybuf);
      bson_t doc;
      if (d.init_static(&doc)) bson_append_document(&arr, key, static_cast<int>(klen), &doc);
    }
    bson_append_array_end(&out, &arr);
  }
  BsonBytes bytes(bson_get_data(&out), bson_get_data(&out) + out.len);
  bson_destroy(&out);
  return bytes;
}

}  // namespace varanus::wire
