// varanus-stub — hello / isMaster replies and compression negotiation.
#pragma once

#include "commands.hpp"

namespace varanus::stub {

/// The reply to hello / isMaster / ismaster, as a 6.0 mongod shapes it.
/// A `compression` list in the request negotiates this connection's
/// compressors: the client's names that the stub also offers, in the
/// client's order, echoed back as `compression` when not empty.
Doc hello_reply(CommandContext& ctx, const CommandInput& in);

/// Awaitable hello: the body has topologyVersion and maxAwaitTimeMS.
struct AwaitSpec {
  bool awaitable = false;
  bson_oid_t processId{};
  std::int64_t counter = 0;
  std::int64_t maxAwaitTimeMS = 0;
};
AwaitSpec await_spec(BsonView helloBody);

}  // namespace varanus::stub
