// The command view: what command monitoring calls commandName, databaseName
// and command, from whichever opcode carried the request.
#include "varanus/wire/command.hpp"

#include <cstring>
#include <string>

#include "bytes.hpp"
#include "varanus/wire/bson_walk.hpp"

namespace varanus::wire {

using detail::make_error;

std::string_view first_key(BsonView doc) noexcept {
  BsonWalk walk(doc);
  BsonElement e;
  return walk.next(e) ? e.key : std::string_view{};
}

namespace {

// The document value of `key` in `doc`, if it has one.
std::optional<BsonView> subdocument(BsonView doc, std::string_view key) noexcept {
  BsonElement e;
  if (!BsonWalk::find(doc, key, e) || e.type != bson_type::kDocument) return std::nullopt;
  return e.as_document();
}

std::string_view string_field(BsonView doc, std::string_view key) noexcept {
  BsonElement e;
  if (!BsonWalk::find(doc, key, e) || e.type != bson_type::kUtf8) return {};
  return e.as_string();
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
