#include "handshake.hpp"

#include <algorithm>
#include <chrono>

#include "auth.hpp"

namespace varanus::stub {
namespace {

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void negotiate_compression(CommandContext& ctx, const bson_t* req) {
  bson_iter_t it;
  if (!find(req, "compression", &it) || !BSON_ITER_HOLDS_ARRAY(&it)) return;
  std::vector<wire::Compressor> agreed;
  bson_iter_t e;
  bson_iter_recurse(&it, &e);
  while (bson_iter_next(&e)) {
    auto name = as_string(e);
    if (!name) continue;
    auto c = wire::compressor_from_name(*name);
    const auto& offered = ctx.state.options.compressors;
    if (c && std::find(offered.begin(), offered.end(), *c) != offered.end() &&
        std::find(agreed.begin(), agreed.end(), *c) == agreed.end()) {
      agreed.push_back(*c);
    }
  }
  ctx.session.compressors = std::move(agreed);
}

// mongod's electionId: 0x7fffffff followed by the term as a big-endian int64.
bson_oid_t election_id(std::int64_t term) {
  bson_oid_t oid;
  oid.bytes[0] = 0x7f;
  oid.bytes[1] = oid.bytes[2] = oid.bytes[3] = 0xff;
  auto t = static_cast<std::uint64_t>(term);
  for (int i = 0; i < 8; ++i) oid.bytes[4 + i] = static_cast<std::uint8_t>(t >> (8 * (7 - i)));
  return oid;
}

void append_strings(bson_t* out, const char* key, const std::vector<std::string>& values) {
  bson_t arr;
  BSON_APPEND_ARRAY_BEGIN(out, key, &arr);
  for (std::size_t i = 0; i < values.size(); ++i) {
    append_utf8(&arr, std::to_string(i), values[i]);
  }
  bson_append_array_end(out, &arr);
}

// A mongos's hello (MongosHelloResponse and the cluster hello command):
// isWritablePrimary (ismaster for isMaster) true, msg "isdbgrid" and
// topologyVersion first; no setName, hosts, me, secondary or readOnly. In
// mongos's field order; drivers type the server Mongos from `msg`.
Doc mongos_hello_reply(CommandContext& ctx, const CommandInput& in, const bson_t* req) {
  Topology::MemberState st = ctx.state.topology.state(ctx.session.member);
  Doc reply;
  bson_t* r = reply.get();
  BSON_APPEND_BOOL(r, in.name == "hello" ? "isWritablePrimary" : "ismaster", true);
  BSON_APPEND_UTF8(r, "msg", "isdbgrid");
  bson_t tv;
  BSON_APPEND_DOCUMENT_BEGIN(r, "topologyVersion", &tv);
  BSON_APPEND_OID(&tv, "processId", &st.processId);
  BSON_APPEND_INT64(&tv, "counter", st.counter);
  bson_append_document_end(r, &tv);
  if (get_bool(req, "helloOk")) BSON_APPEND_BOOL(r, "helloOk", true);
  BSON_APPEND_INT32(r, "maxBsonObjectSize", 16 * 1024 * 1024);
  BSON_APPEND_INT32(r, "maxMessageSizeBytes", wire::kDefaultMaxMessageSize);
  BSON_APPEND_INT32(r, "maxWriteBatchSize", 100000);
  BSON_APPEND_DATE_TIME(r, "localTime", now_ms());
  BSON_APPEND_INT32(r, "logicalSessionTimeoutMinutes", 30);
  BSON_APPEND_INT64(r, "connectionId", ctx.session.connectionId);
  BSON_APPEND_INT32(r, "maxWireVersion", ctx.state.options.maxWireVersion);
  BSON_APPEND_INT32(r, "minWireVersion", 0);
  if (!ctx.session.compressors.empty()) {
    std::vector<std::string> names;
    for (auto c : ctx.session.compressors) names.emplace_back(wire::to_string(c));
    append_strings(r, "compression", names);
  }
  if (const auto mechs = get_string(req, "saslSupportedMechs")) {
    if (auto arr = sasl_supported_mechs(ctx, *mechs))
      BSON_APPEND_ARRAY(r, "saslSupportedMechs", arr->get());
  }
  if (const BsonView spec = get_document(req, "speculativeAuthenticate"); spec.data) {
    if (auto first = speculative_authenticate(ctx, spec))
      BSON_APPEND_DOCUMENT(r, "speculativeAuthenticate", first->get());
  }
  BSON_APPEND_DOUBLE(r, "ok", 1.0);
  return reply;
}

}  // namespace

Doc hello_reply(CommandContext& ctx, const CommandInput& in) {
  StaticDoc req(in.body);
  negotiate_compression(ctx, req.get());
  if (ctx.state.options.mongos) return mongos_hello_reply(ctx, in, req.get());
  const Topology& topo = ctx.state.topology;
  Topology::MemberState st = topo.state(ctx.session.member);
  // hello answers isWritablePrimary; the legacy isMaster answers ismaster.
  const char* primaryField = in.name == "hello" ? "isWritablePrimary" : "ismaster";

  Doc reply;
  bson_t* r = reply.get();
  if (get_bool(req.get(), "helloOk")) BSON_APPEND_BOOL(r, "helloOk", true);
  bson_t tv;
  BSON_APPEND_DOCUMENT_BEGIN(r, "topologyVersion", &tv);
  BSON_APPEND_OID(&tv, "processId", &st.processId);
  BSON_APPEND_INT64(&tv, "counter", st.counter);
  bson_append_document_end(r, &tv);
  if (topo.replica_set() && st.removed) {
    // mongod's REMOVED state (fillIsMasterForReplSet: markAsNoConfig): no
    // setName, hosts or me; drivers see an RSGhost.
    BSON_APPEND_BOOL(r, primaryField, false);
    BSON_APPEND_BOOL(r, "secondary", false);
    BSON_APPEND_UTF8(r, "info", "Does not have a valid replica set config");
    BSON_APPEND_BOOL(r, "isreplicaset", true);
  } else if (topo.replica_set()) {
    append_strings(r, "hosts", st.hosts);
    append_utf8(r, "setName", topo.set_name());
    BSON_APPEND_INT32(r, "setVersion", static_cast<std::int32_t>(st.setVersion));
    BSON_APPEND_BOOL(r, primaryField, st.primary);
    BSON_APPEND_BOOL(r, "secondary", !st.primary);
    if (!st.primaryHost.empty()) append_utf8(r, "primary", st.primaryHost);
    append_utf8(r, "me", st.me);
    if (st.primary) {
      bson_oid_t eid = election_id(st.term);
      BSON_APPEND_OID(r, "electionId", &eid);
    }
    bson_t lw;
    bson_t op;
    BSON_APPEND_DOCUMENT_BEGIN(r, "lastWrite", &lw);
    BSON_APPEND_DOCUMENT_BEGIN(&lw, "opTime", &op);
    BSON_APPEND_TIMESTAMP(&op, "ts", static_cast<std::uint32_t>(now_ms() / 1000), 1);
    BSON_APPEND_INT64(&op, "t", st.term);
    bson_append_document_end(&lw, &op);
    BSON_APPEND_DATE_TIME(&lw, "lastWriteDate", now_ms() / 1000 * 1000);
    bson_append_document_end(r, &lw);
  } else {
    BSON_APPEND_BOOL(r, primaryField, true);
  }
  BSON_APPEND_INT32(r, "maxBsonObjectSize", 16 * 1024 * 1024);
  BSON_APPEND_INT32(r, "maxMessageSizeBytes", wire::kDefaultMaxMessageSize);
  BSON_APPEND_INT32(r, "maxWriteBatchSize", 100000);
  BSON_APPEND_DATE_TIME(r, "localTime", now_ms());
  BSON_APPEND_INT32(r, "logicalSessionTimeoutMinutes", 30);
  BSON_APPEND_INT64(r, "connectionId", ctx.session.connectionId);
  BSON_APPEND_INT32(r, "minWireVersion", 0);
  BSON_APPEND_INT32(r, "maxWireVersion", ctx.state.options.maxWireVersion);
  BSON_APPEND_BOOL(r, "readOnly", false);
  // Authentication in the handshake: the user's mechanisms, and the first
  // SCRAM step when the driver starts it speculatively.
  if (const auto mechs = get_string(req.get(), "saslSupportedMechs")) {
    if (auto arr = sasl_supported_mechs(ctx, *mechs))
      BSON_APPEND_ARRAY(r, "saslSupportedMechs", arr->get());
  }
  if (const BsonView spec = get_document(req.get(), "speculativeAuthenticate"); spec.data) {
    if (auto first = speculative_authenticate(ctx, spec))
      BSON_APPEND_DOCUMENT(r, "speculativeAuthenticate", first->get());
  }
  if (!ctx.session.compressors.empty()) {
    std::vector<std::string> names;
    for (auto c : ctx.session.compressors) names.emplace_back(wire::to_string(c));
    append_strings(r, "compression", names);
  }
  BSON_APPEND_DOUBLE(r, "ok", 1.0);
  return reply;
}

AwaitSpec await_spec(BsonView helloBody) {
  AwaitSpec s;
  StaticDoc body(helloBody);
  bson_iter_t tv;
  auto maxAwait = get_int64(body.get(), "maxAwaitTimeMS");
  if (!maxAwait || !find(body.get(), "topologyVersion", &tv) || !BSON_ITER_HOLDS_DOCUMENT(&tv)) {
    return s;
  }
  StaticDoc tvDoc(sub_view(tv));
  bson_iter_t pid;
  if (find(tvDoc.get(), "processId", &pid) && BSON_ITER_HOLDS_OID(&pid)) {
    bson_oid_copy(bson_iter_oid(&pid), &s.processId);
  }
  s.counter = get_int64(tvDoc.get(), "counter").value_or(0);
  s.maxAwaitTimeMS = std::max<std::int64_t>(0, *maxAwait);
  s.awaitable = true;
  return s;
}

}  // namespace varanus::stub
