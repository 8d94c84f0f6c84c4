#include "commands.hpp"

#include <algorithm>
#include <array>
#include <cctype>

#include "handshake.hpp"

namespace varanus::stub {

std::vector<BsonView> CommandInput::documents(std::string_view field) const {
  if (sequences != nullptr) {
    for (const auto& seq : *sequences) {
      if (seq.identifier == field) return seq.documents;
    }
  }
  std::vector<BsonView> out;
  StaticDoc b(body);
  bson_iter_t it;
  if (!find(b.get(), field, &it) || !BSON_ITER_HOLDS_ARRAY(&it)) return out;
  bson_iter_t e;
  bson_iter_recurse(&it, &e);
  while (bson_iter_next(&e)) {
    if (BSON_ITER_HOLDS_DOCUMENT(&e)) out.push_back(sub_view(e));
  }
  return out;
}

Doc error_reply(int code, std::string_view codeName, std::string_view errmsg) {
  Doc d;
  BSON_APPEND_DOUBLE(d.get(), "ok", 0.0);
  append_utf8(d.get(), "errmsg", errmsg);
  BSON_APPEND_INT32(d.get(), "code", code);
  append_utf8(d.get(), "codeName", codeName);
  return d;
}

Doc error_reply(const CommandError& e) {
  return error_reply(e.code, e.codeName, e.errmsg);
}

bool never_compressed(std::string_view name) {
  static constexpr std::array<std::string_view, 11> kNames = {
      "hello",      "ismaster",   "saslstart",       "saslcontinue",   "getnonce", "authenticate",
      "createuser", "updateuser", "copydbsaslstart", "copydbgetnonce", "copydb"};
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(kNames.begin(), kNames.end(), lower) != kNames.end();
}

bool is_hello(std::string_view name) {
  return name == "hello" || name == "isMaster" || name == "ismaster";
}

Doc cursor_reply(std::string_view ns, const std::vector<BsonBytes>& docs, std::int64_t id,
                 bool first) {
  Doc d;
  bson_t cursor;
  BSON_APPEND_DOCUMENT_BEGIN(d.get(), "cursor", &cursor);
  std::vector<BsonView> views;
  views.reserve(docs.size());
  for (const auto& doc : docs) views.push_back(view_of(doc));
  append_array(&cursor, first ? "firstBatch" : "nextBatch", views);
  BSON_APPEND_INT64(&cursor, "id", id);
  append_utf8(&cursor, "ns", ns);
  bson_append_document_end(d.get(), &cursor);
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

CommandResult run_command(CommandContext& ctx, const CommandInput& in) {
  CommandResult out;
  // A mongos has no replica-set commands of its own: "no such command".
  if (ctx.state.options.mongos && (in.name == "replSetStepDown" || in.name == "replSetStepUp")) {
    out.reply = error_reply(59, "CommandNotFound", "no such command: '" + in.name + "'");
    return out;
  }
  if (is_hello(in.name)) {
    out.reply = hello_reply(ctx, in);
    return out;
  }
  if (run_crud_command(ctx, in, out) || run_admin_command(ctx, in, out)) return out;
  out.reply = error_reply(59, "CommandNotFound", "no such command: '" + in.name + "'");
  return out;
}

}  // namespace varanus::stub
