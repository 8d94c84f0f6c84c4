// The command view: what command monitoring calls commandName, databaseName
// and command, from whichever opcode carried the request.
#include "varanus/wire/command.hpp"

#include <charconv>
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

BsonBytes merged_command(const CommandView& view, BsonBytes spare) {
  static constexpr std::uint8_t kEmpty[5] = {5, 0, 0, 0, 0};
  BsonBytes& out = spare;
  out.clear();
  if (!bson_framed(view.body)) {
    out.assign(std::begin(kEmpty), std::end(kEmpty));
    return std::move(out);
  }
  // Written by hand into the reused buffer (this runs on the I/O thread for
  // every insert, update and delete a driver sends with kind-1 sections):
  // the body without its trailing NUL, then per sequence an array element
  // {"0": doc, "1": doc, ...}; lengths patched at the end. Documents that
  // are not framed are left out, as a bson_t append would refuse them.
  std::size_t total = view.body.size;
  if (view.sequences != nullptr) {
    for (const DocumentSequence& seq : *view.sequences) {
      total += seq.identifier.size() + 7;
      for (const BsonView& d : seq.documents) total += d.size + 12;
    }
  }
  detail::reserve_reusable(out, total);
  out.insert(out.end(), view.body.data, view.body.data + view.body.size - 1);
  // A document's length, from `at` to the end of what is written so far.
  const auto put_len = [&out](std::size_t at) {
    detail::store_u32(out.data() + at, static_cast<std::uint32_t>(out.size() - at));
  };
  if (view.sequences != nullptr) {
    for (const DocumentSequence& seq : *view.sequences) {
      out.push_back(bson_type::kArray);
      out.insert(out.end(), seq.identifier.begin(), seq.identifier.end());
      out.push_back(0);
      const std::size_t arrayAt = out.size();
      out.insert(out.end(), 4, 0);
      std::uint32_t i = 0;
      char key[16];
      for (const BsonView& d : seq.documents) {
        if (!bson_framed(d)) continue;
        out.push_back(bson_type::kDocument);
        const auto [end, ec] = std::to_chars(key, key + sizeof key, i++);
        out.insert(out.end(), key, end);
        out.push_back(0);
        out.insert(out.end(), d.data, d.data + d.size);
      }
      out.push_back(0);
      put_len(arrayAt);
    }
  }
  out.push_back(0);
  put_len(0);
  return std::move(out);
}

}  // namespace varanus::wire
