// varanus-stub — command dispatch. A command arrives as a body plus, for
// OP_MSG, kind-1 document sequences; handlers run synchronously against
// the store and return the reply document. What needs waiting (sleep,
// streaming hello, exhaust) is left to the session, which owns the socket.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "doc.hpp"
#include "match.hpp"
#include "state.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::stub {

struct CommandInput {
  std::string name;  ///< first key of the body
  std::string db;    ///< $db, or the "<db>.$cmd" prefix
  BsonView body;
  const std::vector<wire::DocumentSequence>* sequences = nullptr;
  bool opQuery = false;  ///< arrived as OP_QUERY on <db>.$cmd

  /// The documents of `field`: a kind-1 sequence of that name, else the
  /// body's array of documents. Non-document elements are skipped.
  std::vector<BsonView> documents(std::string_view field) const;
};

struct CommandContext {
  ServerState& state;
  SessionInfo& session;
};

struct CommandResult {
  Doc reply;
  std::chrono::milliseconds delay{0};  ///< `sleep`: answer after this long
};

/// Runs one command; never throws for a bad command (errors are replies).
CommandResult run_command(CommandContext& ctx, const CommandInput& in);

/// {ok: 0, errmsg, code, codeName}
Doc error_reply(const CommandError& e);
Doc error_reply(int code, std::string_view codeName, std::string_view errmsg);

/// Commands whose replies are never compressed (OP_COMPRESSED spec).
bool never_compressed(std::string_view commandName);
/// hello / isMaster / ismaster
bool is_hello(std::string_view commandName);

// Handler groups (crud.cpp, admin.cpp); each returns false if `in.name` is not theirs.
bool run_crud_command(CommandContext& ctx, const CommandInput& in, CommandResult& out);
bool run_admin_command(CommandContext& ctx, const CommandInput& in, CommandResult& out);

/// {cursor: {firstBatch|nextBatch: [...], id, ns}, ok: 1.0}
Doc cursor_reply(std::string_view ns, const std::vector<BsonBytes>& docs, std::int64_t id,
                 bool first);

}  // namespace varanus::stub
