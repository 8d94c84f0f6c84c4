// varanus-stub — administrative, catalog, session and test commands, and the
// stub's own admin commands (stubFault, replSetStepDown / replSetStepUp, and
// the replica-set faults: stubStopMember, stubStartMember, stubHangMember,
// stubAddMember, stubRemoveMember).
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <variant>

#include "auth.hpp"
#include "commands.hpp"
#include "members.hpp"

namespace varanus::stub {
namespace {

Doc ok_reply() {
  Doc d;
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

std::string target_collection(const bson_t* body) {
  bson_iter_t it;
  if (bson_iter_init(&it, body) && bson_iter_next(&it)) {
    if (auto s = as_string(it)) return std::string(*s);
  }
  return {};
}

Doc run_build_info(const ServerState& state) {
  Doc d;
  bson_t* r = d.get();
  BSON_APPEND_UTF8(r, "version", "6.0.0");
  BSON_APPEND_UTF8(r, "gitVersion", "varanus-stub");
  bson_t arr;
  BSON_APPEND_ARRAY_BEGIN(r, "modules", &arr);
  bson_append_array_end(r, &arr);
  BSON_APPEND_UTF8(r, "allocator", "system");
  BSON_APPEND_UTF8(r, "javascriptEngine", "none");
  BSON_APPEND_UTF8(r, "sysInfo", "deprecated");
  BSON_APPEND_ARRAY_BEGIN(r, "versionArray", &arr);
  const std::array<std::int32_t, 4> version = {6, 0, 0, 0};
  for (std::size_t i = 0; i < version.size(); ++i) {
    BSON_APPEND_INT32(&arr, std::to_string(i).c_str(), version[i]);
  }
  bson_append_array_end(r, &arr);
  BSON_APPEND_INT32(r, "bits", 64);
  BSON_APPEND_BOOL(r, "debug", false);
  BSON_APPEND_INT32(r, "maxBsonObjectSize", 16 * 1024 * 1024);
  BSON_APPEND_ARRAY_BEGIN(r, "storageEngines", &arr);
  BSON_APPEND_UTF8(&arr, "0", "inMemory");
  bson_append_array_end(r, &arr);
  BSON_APPEND_INT32(r, "maxWireVersion", state.options.maxWireVersion);
  BSON_APPEND_DOUBLE(r, "ok", 1.0);
  return d;
}

Doc run_get_parameter(const bson_t* body) {
  bson_iter_t first;
  bson_iter_init(&first, body);
  bson_iter_next(&first);
  bool all = as_string(first) == "*";
  Doc d;
  bool any = false;
  auto wanted = [&](const char* name) {
    bson_iter_t it;
    bool w = all || find(body, name, &it);
    any = any || w;
    return w;
  };
  if (wanted("featureCompatibilityVersion")) {
    bson_t fcv;
    BSON_APPEND_DOCUMENT_BEGIN(d.get(), "featureCompatibilityVersion", &fcv);
    BSON_APPEND_UTF8(&fcv, "version", "6.0");
    bson_append_document_end(d.get(), &fcv);
  }
  if (wanted("authenticationMechanisms")) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(d.get(), "authenticationMechanisms", &arr);
    BSON_APPEND_UTF8(&arr, "0", "SCRAM-SHA-1");
    BSON_APPEND_UTF8(&arr, "1", "SCRAM-SHA-256");
    bson_append_array_end(d.get(), &arr);
  }
  if (wanted("maxBSONObjectSize"))
    BSON_APPEND_INT32(d.get(), "maxBSONObjectSize", 16 * 1024 * 1024);
  if (wanted("enableTestCommands")) BSON_APPEND_BOOL(d.get(), "enableTestCommands", true);
  if (!any) return error_reply(72, "InvalidOptions", "no option found to get");
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

Doc run_list_databases(CommandContext& ctx, const bson_t* body) {
  bool nameOnly = get_bool(body, "nameOnly");
  BsonView filter = get_document(body, "filter");
  if (auto e = validate_filter(filter)) return error_reply(*e);
  StaticDoc f(filter);
  Doc d;
  bson_t arr;
  BSON_APPEND_ARRAY_BEGIN(d.get(), "databases", &arr);
  std::int64_t total = 0;
  std::uint32_t i = 0;
  for (const auto& info : ctx.state.store.databases()) {
    Doc entry;
    append_utf8(entry.get(), "name", info.name);
    if (!nameOnly) {
      BSON_APPEND_INT64(entry.get(), "sizeOnDisk", info.sizeOnDisk);
      BSON_APPEND_BOOL(entry.get(), "empty", info.empty);
    }
    if (!filter.empty() && !matches(entry.get(), f.get())) continue;
    total += info.sizeOnDisk;
    std::string key = std::to_string(i++);
    BSON_APPEND_DOCUMENT(&arr, key.c_str(), entry.get());
  }
  bson_append_array_end(d.get(), &arr);
  if (!nameOnly) {
    BSON_APPEND_INT64(d.get(), "totalSize", total);
    BSON_APPEND_INT64(d.get(), "totalSizeMb", total / (1024 * 1024));
  }
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

Doc run_list_collections(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  bool nameOnly = get_bool(body, "nameOnly");
  BsonView filter = get_document(body, "filter");
  if (auto e = validate_filter(filter)) return error_reply(*e);
  StaticDoc f(filter);
  std::vector<BsonBytes> entries;
  for (const auto& c : ctx.state.store.collections(in.db)) {
    Doc entry;
    append_utf8(entry.get(), "name", c.name);
    BSON_APPEND_UTF8(entry.get(), "type", "collection");
    if (!nameOnly) {
      bson_t sub;
      BSON_APPEND_DOCUMENT_BEGIN(entry.get(), "options", &sub);
      bson_append_document_end(entry.get(), &sub);
      BSON_APPEND_DOCUMENT_BEGIN(entry.get(), "info", &sub);
      BSON_APPEND_BOOL(&sub, "readOnly", false);
      bson_append_document_end(entry.get(), &sub);
      append_doc(entry.get(), "idIndex", view_of(c.indexes.front()));
    }
    if (!filter.empty() && !matches(entry.get(), f.get())) continue;
    entries.push_back(entry.bytes());
  }
  std::string ns = in.db + ".$cmd.listCollections";
  Batch b = ctx.state.cursors.open(ns, std::move(entries), -1, true);
  return cursor_reply(ns, b.docs, 0, true);
}

Doc ns_not_found(std::string_view msg) {
  return error_reply(26, "NamespaceNotFound", msg);
}

Doc run_list_indexes(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  std::string coll = target_collection(body);
  for (auto& c : ctx.state.store.collections(in.db)) {
    if (c.name != coll) continue;
    std::string ns = in.db + "." + coll;
    return cursor_reply(ns, c.indexes, 0, true);
  }
  return ns_not_found("ns does not exist: " + in.db + "." + coll);
}

Doc run_create_indexes(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  auto r = ctx.state.store.create_indexes(in.db, target_collection(body), in.documents("indexes"));
  Doc d;
  BSON_APPEND_INT32(d.get(), "numIndexesBefore", r.before);
  BSON_APPEND_INT32(d.get(), "numIndexesAfter", r.after);
  BSON_APPEND_BOOL(d.get(), "createdCollectionAutomatically", r.created);
  if (r.before == r.after) BSON_APPEND_UTF8(d.get(), "note", "all indexes already exist");
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

Doc run_drop_indexes(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  std::string coll = target_collection(body);
  std::string name = std::string(get_string(body, "index").value_or("*"));
  std::int32_t before = 0;
  if (!ctx.state.store.has_collection(in.db, coll))
    return ns_not_found("ns not found " + in.db + "." + coll);
  if (!ctx.state.store.drop_indexes(in.db, coll, name, &before)) {
    return error_reply(27, "IndexNotFound", "index not found with name [" + name + "]");
  }
  Doc d;
  BSON_APPEND_INT32(d.get(), "nIndexesWas", before);
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

Doc run_server_status(CommandContext& ctx) {
  using namespace std::chrono;
  auto up = steady_clock::now() - ctx.state.started;
  Doc d;
  bson_t* r = d.get();
  append_utf8(r, "host", ctx.state.topology.host(ctx.session.member));
  BSON_APPEND_UTF8(r, "version", "6.0.0");
  BSON_APPEND_UTF8(r, "process", ctx.state.options.mongos ? "mongos" : "mongod");
  BSON_APPEND_INT64(r, "pid", getpid());
  BSON_APPEND_INT64(r, "uptime", duration_cast<seconds>(up).count());
  BSON_APPEND_INT64(r, "uptimeMillis", duration_cast<milliseconds>(up).count());
  BSON_APPEND_DATE_TIME(
      r, "localTime", duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
  bson_t conns;
  BSON_APPEND_DOCUMENT_BEGIN(r, "connections", &conns);
  BSON_APPEND_INT64(&conns, "current", ctx.state.connectionsCurrent.load());
  BSON_APPEND_INT64(&conns, "totalCreated", ctx.state.connectionsTotal.load());
  bson_append_document_end(r, &conns);
  bson_t stub;
  BSON_APPEND_DOCUMENT_BEGIN(r, "varanusStub", &stub);
  const auto& c = ctx.state.counters;
  BSON_APPEND_INT64(&stub, "openCursors",
                    static_cast<std::int64_t>(ctx.state.cursors.open_count()));
  BSON_APPEND_INT64(&stub, "opMsgIn", c.opMsgIn.load());
  BSON_APPEND_INT64(&stub, "opQueryIn", c.opQueryIn.load());
  BSON_APPEND_INT64(&stub, "moreToComeIn", c.moreToComeIn.load());
  BSON_APPEND_INT64(&stub, "exhaustGetMoreOut", c.exhaustGetMoreOut.load());
  BSON_APPEND_INT64(&stub, "exhaustOpReplyOut", c.exhaustOpReplyOut.load());
  BSON_APPEND_INT64(&stub, "awaitedHelloOut", c.awaitedHelloOut.load());
  auto by_compressor = [&](const char* key, const auto& counts) {
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(&stub, key, &sub);
    for (auto id : {wire::Compressor::snappy, wire::Compressor::zlib, wire::Compressor::zstd}) {
      std::string_view name = wire::to_string(id);
      bson_append_int64(&sub, name.data(), static_cast<int>(name.size()),
                        counts[static_cast<std::size_t>(id)].load());
    }
    bson_append_document_end(&stub, &sub);
  };
  by_compressor("compressedIn", c.compressedIn);
  by_compressor("compressedOut", c.compressedOut);
  bson_append_document_end(r, &stub);
  BSON_APPEND_DOUBLE(r, "ok", 1.0);
  return d;
}

Doc faults_reply(const FaultSettings& f) {
  Doc d;
  BSON_APPEND_INT64(d.get(), "closeAfter", f.closeAfter);
  BSON_APPEND_INT64(d.get(), "delayMs", f.delayMs);
  BSON_APPEND_BOOL(d.get(), "reset", f.reset);
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

// {stubFault: 1, closeAfter: N, delayMs: M, reset: bool, thisConnection: bool}:
// sets the knobs to exactly these values (absent = off), process-wide or for
// this connection only (closeAfter then counts from the next message).
Doc run_stub_fault(CommandContext& ctx, const bson_t* body) {
  FaultSettings f;
  f.closeAfter = std::max<std::int64_t>(0, get_int64(body, "closeAfter").value_or(0));
  f.delayMs = std::max<std::int64_t>(0, get_int64(body, "delayMs").value_or(0));
  f.reset = get_bool(body, "reset");
  if (get_bool(body, "thisConnection")) {
    ctx.session.faults = f;
    ctx.session.messagesSinceFaults = 0;
  } else {
    ctx.state.faults.set(f);
  }
  return faults_reply(f);
}

Doc no_replication() {
  return error_reply(76, "NoReplicationEnabled", "not running with --replSet");
}

Doc run_step_down(CommandContext& ctx) {
  Topology& t = ctx.state.topology;
  if (!t.replica_set()) return no_replication();
  if (auto e = t.step_down(ctx.session.member)) return error_reply(*e);
  return ok_reply();
}

Doc run_step_up(CommandContext& ctx) {
  Topology& t = ctx.state.topology;
  if (!t.replica_set()) return no_replication();
  if (auto e = t.step_up(ctx.session.member)) return error_reply(*e);
  return ok_reply();
}

Doc member_reply(const std::string& host) {
  Doc d;
  append_utf8(d.get(), "host", host);
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

// The member a command names by its first value, "host:port" as hellos list
// it (removed members too), or the error reply.
std::variant<int, Doc> named_member(CommandContext& ctx, const bson_t* body,
                                    const std::string& command) {
  const Topology& t = ctx.state.topology;
  if (!t.replica_set()) return no_replication();
  bson_iter_t it;
  bson_iter_init(&it, body);
  bson_iter_next(&it);
  auto host = as_string(it);
  if (!host) {
    return error_reply(14, "TypeMismatch",
                       command + " takes a member's \"host:port\", as hellos list it");
  }
  if (auto m = t.find(*host)) return *m;
  std::string known;
  for (int i = 0; i < t.size(); ++i) known += (i ? ", " : "") + t.host(i);
  return error_reply(74, "NodeNotFound",
                     "no member " + std::string(*host) + " in replica set " + t.set_name() +
                         " (members: " + known + ")");
}

// {stubStopMember: "host:port"}: that member dies as a killed mongod would.
// Sent to the member itself, the connection closes unanswered (as shutdown's).
Doc run_stop_member(CommandContext& ctx, const bson_t* body) {
  auto m = named_member(ctx, body, "stubStopMember");
  if (auto* err = std::get_if<Doc>(&m)) return std::move(*err);
  int member = std::get<int>(m);
  if (auto e = ctx.state.members->stop(member)) return error_reply(*e);
  return member_reply(ctx.state.topology.host(member));
}

// {stubStartMember: "host:port"}: a stopped member restarts on its port.
Doc run_start_member(CommandContext& ctx, const bson_t* body) {
  auto m = named_member(ctx, body, "stubStartMember");
  if (auto* err = std::get_if<Doc>(&m)) return std::move(*err);
  int member = std::get<int>(m);
  if (auto e = ctx.state.members->start(member)) return error_reply(*e);
  return member_reply(ctx.state.topology.host(member));
}

// {stubHangMember: "host:port", hang: bool (default true)}.
Doc run_hang_member(CommandContext& ctx, const bson_t* body) {
  auto m = named_member(ctx, body, "stubHangMember");
  if (auto* err = std::get_if<Doc>(&m)) return std::move(*err);
  int member = std::get<int>(m);
  bson_iter_t it;
  bool hang = !find(body, "hang", &it) || as_bool(it);
  if (auto e = ctx.state.topology.set_hung(member, hang)) return error_reply(*e);
  std::fprintf(stderr, "varanus-stub: member %s %s\n", ctx.state.topology.host(member).c_str(),
               hang ? "hung" : "answering again");
  return member_reply(ctx.state.topology.host(member));
}

// {stubAddMember: 1, port: P}: a new secondary on port P (0 = a free port;
// absent: the port after the highest member's when the set was started on
// a fixed port, else a free one).
Doc run_add_member(CommandContext& ctx, const bson_t* body) {
  if (!ctx.state.topology.replica_set()) return no_replication();
  std::optional<std::uint16_t> port;
  bson_iter_t it;
  if (find(body, "port", &it)) {
    auto p = as_int64(it);
    if (!p || *p < 0 || *p > 65535) {
      return error_reply(2, "BadValue", "stubAddMember: port must be a number from 0 to 65535");
    }
    port = static_cast<std::uint16_t>(*p);
  }
  auto added = ctx.state.members->add(port);
  if (auto* e = std::get_if<CommandError>(&added)) return error_reply(*e);
  return member_reply(std::get<std::string>(added));
}

// {stubRemoveMember: "host:port"}: out of the config; it keeps running and
// answers hellos as mongod's REMOVED member.
Doc run_remove_member(CommandContext& ctx, const bson_t* body) {
  auto m = named_member(ctx, body, "stubRemoveMember");
  if (auto* err = std::get_if<Doc>(&m)) return std::move(*err);
  int member = std::get<int>(m);
  if (auto e = ctx.state.topology.remove(member)) return error_reply(*e);
  std::fprintf(stderr, "varanus-stub: member %s removed from %s\n",
               ctx.state.topology.host(member).c_str(), ctx.state.topology.set_name().c_str());
  return member_reply(ctx.state.topology.host(member));
}

bool admin_only(std::string_view name) {
  return name == "listDatabases" || name == "getParameter" || name == "replSetStepDown" ||
         name == "replSetStepUp" || name == "stubFault" || name == "stubStopMember" ||
         name == "stubStartMember" || name == "stubHangMember" || name == "stubAddMember" ||
         name == "stubRemoveMember";
}

}  // namespace

bool run_admin_command(CommandContext& ctx, const CommandInput& in, CommandResult& out) {
  StaticDoc body(in.body);
  const bson_t* b = body.get();
  const std::string& n = in.name;
  if (admin_only(n) && in.db != "admin") {
    out.reply = error_reply(13, "Unauthorized", n + " may only be run against the admin database.");
    return true;
  }
  if (n == "ping" || n == "endSessions" || n == "killAllSessions" || n == "killSessions" ||
      n == "refreshSessions" || n == "abortTransaction" || n == "commitTransaction") {
    out.reply = ok_reply();
  } else if (n == "buildInfo" || n == "buildinfo") {
    out.reply = run_build_info(ctx.state);
  } else if (n == "getParameter") {
    out.reply = run_get_parameter(b);
  } else if (n == "listDatabases") {
    out.reply = run_list_databases(ctx, b);
  } else if (n == "listCollections") {
    out.reply = run_list_collections(ctx, in, b);
  } else if (n == "listIndexes") {
    out.reply = run_list_indexes(ctx, in, b);
  } else if (n == "create") {
    std::string coll = target_collection(b);
    out.reply = ctx.state.store.create_collection(in.db, coll)
                    ? ok_reply()
                    : error_reply(48, "NamespaceExists",
                                  "Collection " + in.db + "." + coll + " already exists.");
  } else if (n == "drop") {
    std::string coll = target_collection(b);
    if (ctx.state.store.drop_collection(in.db, coll)) {
      out.reply = Doc();
      BSON_APPEND_INT32(out.reply.get(), "nIndexesWas", 1);
      append_utf8(out.reply.get(), "ns", in.db + "." + coll);
      BSON_APPEND_DOUBLE(out.reply.get(), "ok", 1.0);
    } else {
      out.reply = ns_not_found("ns not found");
    }
  } else if (n == "dropDatabase") {
    ctx.state.store.drop_database(in.db);
    out.reply = Doc();
    append_utf8(out.reply.get(), "dropped", in.db);
    BSON_APPEND_DOUBLE(out.reply.get(), "ok", 1.0);
  } else if (n == "createIndexes") {
    out.reply = run_create_indexes(ctx, in, b);
  } else if (n == "dropIndexes" || n == "deleteIndexes") {
    out.reply = run_drop_indexes(ctx, in, b);
  } else if (n == "sleep") {
    // The server's test command: {sleep: 1, millis: N} or {secs: N}; default 100 s.
    std::int64_t ms = 100'000;
    if (auto millis = get_int64(b, "millis")) {
      ms = *millis;
    } else if (auto secs = get_int64(b, "secs")) {
      ms = *secs * 1000;
    }
    out.delay = std::chrono::milliseconds(std::max<std::int64_t>(0, ms));
    out.reply = ok_reply();
  } else if (n == "saslStart") {
    out.reply = run_sasl_start(ctx, in);
  } else if (n == "saslContinue") {
    out.reply = run_sasl_continue(ctx, in);
  } else if (n == "createUser" || n == "updateUser" || n == "dropUser") {
    out.reply = run_user_command(ctx, in);
  } else if (n == "stubScramSecrets") {
    out.reply = run_scram_secrets(ctx);
  } else if (n == "authenticate" || n == "copydbsaslstart" || n == "copydbgetnonce") {
    out.reply = error_reply(18, "AuthenticationFailed", "Authentication failed.");
  } else if (n == "serverStatus") {
    out.reply = run_server_status(ctx);
  } else if (n == "whatsmyuri") {
    out.reply = Doc();
    append_utf8(out.reply.get(), "you", ctx.session.peer);
    BSON_APPEND_DOUBLE(out.reply.get(), "ok", 1.0);
  } else if (n == "connectionStatus") {
    out.reply = Doc();
    bson_t info;
    bson_t arr;
    BSON_APPEND_DOCUMENT_BEGIN(out.reply.get(), "authInfo", &info);
    BSON_APPEND_ARRAY_BEGIN(&info, "authenticatedUsers", &arr);
    bson_append_array_end(&info, &arr);
    BSON_APPEND_ARRAY_BEGIN(&info, "authenticatedUserRoles", &arr);
    bson_append_array_end(&info, &arr);
    bson_append_document_end(out.reply.get(), &info);
    BSON_APPEND_DOUBLE(out.reply.get(), "ok", 1.0);
  } else if (n == "stubFault") {
    out.reply = run_stub_fault(ctx, b);
  } else if (n == "replSetStepDown") {
    out.reply = run_step_down(ctx);
  } else if (n == "replSetStepUp") {
    out.reply = run_step_up(ctx);
  } else if (n == "stubStopMember") {
    out.reply = run_stop_member(ctx, b);
  } else if (n == "stubStartMember") {
    out.reply = run_start_member(ctx, b);
  } else if (n == "stubHangMember") {
    out.reply = run_hang_member(ctx, b);
  } else if (n == "stubAddMember") {
    out.reply = run_add_member(ctx, b);
  } else if (n == "stubRemoveMember") {
    out.reply = run_remove_member(ctx, b);
  } else {
    return false;
  }
  return true;
}

}  // namespace varanus::stub
