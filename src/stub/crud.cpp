// varanus-stub — CRUD commands: insert, update, delete, find, getMore,
// killCursors, count, distinct, aggregate. Shapes follow a 6.0 mongod:
// write errors are ok: 1 with writeErrors; bad queries are ok: 0.
#include <cstring>
#include <limits>
#include <map>

#include "commands.hpp"

namespace varanus::stub {
namespace {

constexpr std::int64_t kDefaultFirstBatch = 101;

// The collection a command names: the string value of its first element.
std::string target_collection(const bson_t* body) {
  bson_iter_t it;
  if (bson_iter_init(&it, body) && bson_iter_next(&it)) {
    if (auto s = as_string(it)) return std::string(*s);
  }
  return {};
}

std::string ns_of(const CommandInput& in, const std::string& coll) {
  return in.db + "." + coll;
}

std::optional<CommandError> check_writable(const CommandContext& ctx) {
  if (ctx.state.topology.is_primary(ctx.session.member)) return std::nullopt;
  return CommandError{10107, "NotWritablePrimary", "not primary"};
}

// A read on a secondary needs a read preference other than primary.
std::optional<CommandError> check_readable(const CommandContext& ctx, const bson_t* body) {
  if (!ctx.state.topology.replica_set() || ctx.state.topology.is_primary(ctx.session.member)) {
    return std::nullopt;
  }
  bson_iter_t rp;
  if (find(body, "$readPreference", &rp) && BSON_ITER_HOLDS_DOCUMENT(&rp)) {
    StaticDoc d(sub_view(rp));
    if (get_string(d.get(), "mode").value_or("primary") != "primary") return std::nullopt;
  }
  return CommandError{13435, "NotPrimaryNoSecondaryOk", "not primary and secondaryOk=false"};
}

void append_int(bson_t* out, const char* key, std::int64_t v) {
  if (v >= std::numeric_limits<std::int32_t>::min() &&
      v <= std::numeric_limits<std::int32_t>::max()) {
    BSON_APPEND_INT32(out, key, static_cast<std::int32_t>(v));
  } else {
    BSON_APPEND_INT64(out, key, v);
  }
}

void append_write_errors(bson_t* out, const WriteOutcome& w) {
  if (w.errors.empty()) return;
  bson_t arr;
  BSON_APPEND_ARRAY_BEGIN(out, "writeErrors", &arr);
  for (std::size_t i = 0; i < w.errors.size(); ++i) {
    const WriteError& e = w.errors[i];
    bson_t item;
    std::string key = std::to_string(i);
    bson_append_document_begin(&arr, key.c_str(), static_cast<int>(key.size()), &item);
    BSON_APPEND_INT32(&item, "index", e.index);
    BSON_APPEND_INT32(&item, "code", e.error.code);
    if (!e.keyValue.empty()) {
      bson_t kp;
      BSON_APPEND_DOCUMENT_BEGIN(&item, "keyPattern", &kp);
      BSON_APPEND_INT32(&kp, "_id", 1);
      bson_append_document_end(&item, &kp);
      append_doc(&item, "keyValue", view_of(e.keyValue));
    }
    append_utf8(&item, "errmsg", e.error.errmsg);
    bson_append_document_end(&arr, &item);
  }
  bson_append_array_end(out, &arr);
}

bool ordered(const bson_t* body) {
  bson_iter_t it;
  return !find(body, "ordered", &it) || as_bool(it);
}

Doc run_insert(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_writable(ctx)) return error_reply(*err);
  std::string coll = target_collection(body);
  WriteOutcome w = ctx.state.store.insert(in.db, coll, in.documents("documents"), ordered(body));
  Doc reply;
  append_int(reply.get(), "n", w.n);
  append_write_errors(reply.get(), w);
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

Doc run_update(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_writable(ctx)) return error_reply(*err);
  std::vector<UpdateStatement> statements;
  for (BsonView v : in.documents("updates")) {
    StaticDoc st(v);
    bson_iter_t u;
    if (find(st.get(), "u", &u) && BSON_ITER_HOLDS_ARRAY(&u)) {
      return error_reply(
          CommandError::bad_value("varanus-stub: pipeline-style updates are not supported"));
    }
    statements.push_back({get_document(st.get(), "q"), get_document(st.get(), "u"),
                          get_bool(st.get(), "upsert"), get_bool(st.get(), "multi")});
  }
  WriteOutcome w =
      ctx.state.store.update(in.db, target_collection(body), statements, ordered(body));
  Doc reply;
  bson_t* r = reply.get();
  append_int(r, "n", w.n);
  append_int(r, "nModified", w.nModified);
  if (!w.upserted.empty()) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(r, "upserted", &arr);
    for (std::size_t i = 0; i < w.upserted.size(); ++i) {
      bson_t item;
      std::string key = std::to_string(i);
      bson_append_document_begin(&arr, key.c_str(), static_cast<int>(key.size()), &item);
      BSON_APPEND_INT32(&item, "index", w.upserted[i].first);
      StaticDoc id(w.upserted[i].second);
      bson_iter_t idIt;
      if (find(id.get(), "_id", &idIt)) append_iter(&item, "_id", idIt);
      bson_append_document_end(&arr, &item);
    }
    bson_append_array_end(r, &arr);
  }
  append_write_errors(r, w);
  BSON_APPEND_DOUBLE(r, "ok", 1.0);
  return reply;
}

Doc run_delete(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_writable(ctx)) return error_reply(*err);
  std::vector<DeleteStatement> statements;
  for (BsonView v : in.documents("deletes")) {
    StaticDoc st(v);
    statements.push_back({get_document(st.get(), "q"), get_int64(st.get(), "limit").value_or(0)});
  }
  WriteOutcome w =
      ctx.state.store.remove(in.db, target_collection(body), statements, ordered(body));
  Doc reply;
  append_int(reply.get(), "n", w.n);
  append_write_errors(reply.get(), w);
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

// batchSize as a command carries it: absent -> `absent`, negative -> error.
std::optional<std::int64_t> batch_size(const bson_t* body, std::int64_t absent, CommandError* err) {
  bson_iter_t it;
  if (!find(body, "batchSize", &it)) return absent;
  auto v = as_int64(it);
  if (!v || *v < 0) {
    *err = CommandError::bad_value("BatchSize value must be non-negative, but received: " +
                                   (v ? std::to_string(*v) : std::string("a non-number")));
    return std::nullopt;
  }
  return *v;
}

Doc run_find(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_readable(ctx, body)) return error_reply(*err);
  std::string coll = target_collection(body);
  CommandError err;
  auto bs = batch_size(body, kDefaultFirstBatch, &err);
  if (!bs) return error_reply(err);
  FindSpec spec;
  spec.filter = get_document(body, "filter");
  spec.sort = get_document(body, "sort");
  spec.projection = get_document(body, "projection");
  spec.skip = std::max<std::int64_t>(0, get_int64(body, "skip").value_or(0));
  std::int64_t limit = get_int64(body, "limit").value_or(0);
  bool single = get_bool(body, "singleBatch") || limit < 0;
  spec.limit = limit < 0 ? -limit : limit;
  auto found = ctx.state.store.find(in.db, coll, spec);
  if (auto* e = std::get_if<CommandError>(&found)) return error_reply(*e);
  std::string ns = ns_of(in, coll);
  Batch b = ctx.state.cursors.open(ns, std::move(std::get<0>(found)), *bs, single);
  return cursor_reply(ns, b.docs, b.cursorId, true);
}

Doc run_get_more(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  auto id = get_int64(body, "getMore");
  if (!id) {
    return error_reply(CommandError::type_mismatch("Field 'getMore' must be of type long"));
  }
  CommandError err;
  auto bs = batch_size(body, 0, &err);
  if (!bs) return error_reply(err);
  std::string ns;
  auto b = ctx.state.cursors.next(*id, *bs == 0 ? -1 : *bs, &ns);
  if (!b) {
    return error_reply(43, "CursorNotFound", "cursor id " + std::to_string(*id) + " not found");
  }
  if (ns.empty()) ns = ns_of(in, std::string(get_string(body, "collection").value_or("")));
  return cursor_reply(ns, b->docs, b->cursorId, false);
}

Doc run_kill_cursors(CommandContext& ctx, const bson_t* body) {
  std::vector<std::int64_t> killed;
  std::vector<std::int64_t> missing;
  bson_iter_t it;
  if (find(body, "cursors", &it) && BSON_ITER_HOLDS_ARRAY(&it)) {
    bson_iter_t e;
    bson_iter_recurse(&it, &e);
    while (bson_iter_next(&e)) {
      auto id = as_int64(e);
      if (!id) continue;
      (ctx.state.cursors.kill(*id) ? killed : missing).push_back(*id);
    }
  }
  Doc reply;
  auto append_ids = [&](const char* key, const std::vector<std::int64_t>& ids) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(reply.get(), key, &arr);
    for (std::size_t i = 0; i < ids.size(); ++i)
      BSON_APPEND_INT64(&arr, std::to_string(i).c_str(), ids[i]);
    bson_append_array_end(reply.get(), &arr);
  };
  append_ids("cursorsKilled", killed);
  append_ids("cursorsNotFound", missing);
  append_ids("cursorsAlive", {});
  append_ids("cursorsUnknown", {});
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

Doc run_count(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_readable(ctx, body)) return error_reply(*err);
  FindSpec spec;
  spec.filter = get_document(body, "query");
  spec.skip = std::max<std::int64_t>(0, get_int64(body, "skip").value_or(0));
  spec.limit = std::abs(get_int64(body, "limit").value_or(0));
  auto found = ctx.state.store.find(in.db, target_collection(body), spec);
  if (auto* e = std::get_if<CommandError>(&found)) return error_reply(*e);
  Doc reply;
  append_int(reply.get(), "n", static_cast<std::int64_t>(std::get<0>(found).size()));
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

Doc run_distinct(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_readable(ctx, body)) return error_reply(*err);
  auto key = get_string(body, "key");
  if (!key) return error_reply(CommandError::type_mismatch("distinct key must be a string"));
  FindSpec spec;
  spec.filter = get_document(body, "query");
  auto found = ctx.state.store.find(in.db, target_collection(body), spec);
  if (auto* e = std::get_if<CommandError>(&found)) return error_reply(*e);
  // Collect values (array elements unwound), unique by MongoDB equality.
  Doc values;
  std::vector<BsonBytes> seen;
  std::uint32_t n = 0;
  std::string path(*key);
  auto add = [&](const bson_iter_t& v) {
    Doc one;
    append_iter(one.get(), "v", v);
    for (const auto& s : seen) {
      StaticDoc sd(s);
      bson_iter_t prev;
      find(sd.get(), "v", &prev);
      if (compare_values(prev, v) == 0) return;
    }
    seen.push_back(one.bytes());
    append_iter(values.get(), std::to_string(n++), v);
  };
  for (const auto& doc : std::get<0>(found)) {
    StaticDoc d(doc);
    bson_iter_t v;
    if (!find_path(d.get(), path, &v)) continue;
    if (BSON_ITER_HOLDS_ARRAY(&v)) {
      bson_iter_t e;
      bson_iter_recurse(&v, &e);
      while (bson_iter_next(&e)) add(e);
    } else {
      add(v);
    }
  }
  Doc reply;
  bson_append_array(reply.get(), "values", 6, values.get());
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

Doc run_find_and_modify(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_writable(ctx)) return error_reply(*err);
  FindAndModifySpec spec;
  spec.query = get_document(body, "query");
  spec.sort = get_document(body, "sort");
  spec.update = get_document(body, "update");
  spec.fields = get_document(body, "fields");
  spec.remove = get_bool(body, "remove");
  spec.returnNew = get_bool(body, "new");
  spec.upsert = get_bool(body, "upsert");
  if (spec.remove == !spec.update.empty()) {
    return error_reply(
        CommandError::failed_to_parse("Either an update or remove=true must be specified"));
  }
  auto r = ctx.state.store.find_and_modify(in.db, target_collection(body), spec);
  if (auto* e = std::get_if<CommandError>(&r)) return error_reply(*e);
  auto& out = std::get<FindAndModifyOutcome>(r);
  Doc reply;
  bson_t leo;
  BSON_APPEND_DOCUMENT_BEGIN(reply.get(), "lastErrorObject", &leo);
  append_int(&leo, "n", out.n);
  if (!spec.remove) BSON_APPEND_BOOL(&leo, "updatedExisting", out.updatedExisting);
  if (!out.upserted.empty()) {
    StaticDoc id(out.upserted);
    bson_iter_t it;
    if (find(id.get(), "_id", &it)) append_iter(&leo, "upserted", it);
  }
  bson_append_document_end(reply.get(), &leo);
  if (out.value) {
    append_doc(reply.get(), "value", view_of(*out.value));
  } else {
    BSON_APPEND_NULL(reply.get(), "value");
  }
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

// ---- aggregate: $match $sort $skip $limit $project $count $group ----------

struct Accumulator {
  std::string field;  // output name
  std::string op;     // $sum $min $max $first $last $avg $count
  Value arg;          // the operand (1, "$field", ...)
};

// The value an expression ("$field" or a constant) has for `doc`; nullopt if missing.
std::optional<bson_iter_t> eval(const bson_t* doc, const bson_iter_t& expr) {
  if (auto s = as_string(expr); s && s->starts_with('$')) {
    bson_iter_t v;
    std::string path(s->substr(1));
    if (find_path(doc, path, &v)) return v;
    return std::nullopt;
  }
  return expr;
}

struct Group {
  BsonBytes key;  // {_id: value}
  std::vector<BsonBytes> docs;
};

std::variant<std::vector<BsonBytes>, CommandError> group_stage(std::vector<BsonBytes> docs,
                                                               const bson_t* spec) {
  bson_iter_t idExpr;
  if (!find(spec, "_id", &idExpr)) {
    return CommandError{15955, "Location15955", "a group specification must include an _id"};
  }
  std::vector<Accumulator> accs;
  bson_iter_t it;
  bson_iter_init(&it, spec);
  while (bson_iter_next(&it)) {
    std::string_view name = bson_iter_key(&it);
    if (name == "_id") continue;
    if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
      return CommandError{40234, "Location40234",
                          "The field '" + std::string(name) + "' must be an accumulator object"};
    }
    bson_iter_t op;
    bson_iter_recurse(&it, &op);
    if (!bson_iter_next(&op)) return CommandError::bad_value("empty accumulator");
    std::string opName = bson_iter_key(&op);
    if (opName != "$sum" && opName != "$min" && opName != "$max" && opName != "$first" &&
        opName != "$last" && opName != "$avg" && opName != "$count") {
      return CommandError{15952, "Location15952", "unknown group operator '" + opName + "'"};
    }
    accs.push_back({std::string(name), opName, Value(op)});
  }
  std::vector<Group> groups;
  for (auto& doc : docs) {
    StaticDoc d(doc);
    Doc key;
    if (auto v = eval(d.get(), idExpr)) {
      append_iter(key.get(), "_id", *v);
    } else {
      BSON_APPEND_NULL(key.get(), "_id");
    }
    BsonBytes kb = key.bytes();
    StaticDoc kd(kb);
    bson_iter_t ki;
    find(kd.get(), "_id", &ki);
    Group* g = nullptr;
    for (auto& candidate : groups) {
      StaticDoc cd(candidate.key);
      bson_iter_t ci;
      find(cd.get(), "_id", &ci);
      if (compare_values(ci, ki) == 0) g = &candidate;
    }
    if (g == nullptr) g = &groups.emplace_back(Group{std::move(kb), {}});
    g->docs.push_back(std::move(doc));
  }
  std::vector<BsonBytes> out;
  for (const auto& g : groups) {
    Doc result;
    StaticDoc kd(g.key);
    bson_concat(result.get(), kd.get());
    for (const auto& acc : accs) {
      const char* f = acc.field.c_str();
      const bson_iter_t arg = acc.arg.iter();
      if (acc.op == "$sum" || acc.op == "$avg" || acc.op == "$count") {
        std::int64_t isum = 0;
        double dsum = 0;
        bool isDouble = false;
        std::int64_t count = 0;
        for (const auto& doc : g.docs) {
          StaticDoc d(doc);
          std::optional<bson_iter_t> v;
          if (acc.op == "$count") {
            v = std::nullopt;
            ++isum;
            continue;
          }
          v = eval(d.get(), arg);
          if (!v || !as_double(*v)) continue;
          ++count;
          if (bson_iter_type(&*v) == BSON_TYPE_DOUBLE) isDouble = true;
          dsum += *as_double(*v);
          isum += *as_int64(*v);
        }
        if (acc.op == "$avg") {
          if (count == 0) {
            BSON_APPEND_NULL(result.get(), f);
          } else {
            BSON_APPEND_DOUBLE(result.get(), f, dsum / static_cast<double>(count));
          }
        } else if (isDouble) {
          BSON_APPEND_DOUBLE(result.get(), f, dsum);
        } else {
          append_int(result.get(), f, isum);
        }
        continue;
      }
      // $min $max $first $last
      std::optional<BsonBytes> best;
      for (const auto& doc : g.docs) {
        StaticDoc d(doc);
        auto v = eval(d.get(), arg);
        if (!v) continue;
        bool take = !best || acc.op == "$last";
        if (best && (acc.op == "$min" || acc.op == "$max")) {
          StaticDoc bd(*best);
          bson_iter_t bi;
          find(bd.get(), "v", &bi);
          int c = compare_values(*v, bi);
          take = acc.op == "$min" ? c < 0 : c > 0;
        }
        if (take) {
          Doc one;
          append_iter(one.get(), "v", *v);
          best = one.bytes();
        }
        if (acc.op == "$first") break;
      }
      if (best) {
        StaticDoc bd(*best);
        bson_iter_t bi;
        find(bd.get(), "v", &bi);
        append_iter(result.get(), f, bi);
      } else {
        BSON_APPEND_NULL(result.get(), f);
      }
    }
    out.push_back(result.bytes());
  }
  return out;
}

Doc run_aggregate(CommandContext& ctx, const CommandInput& in, const bson_t* body) {
  if (auto err = check_readable(ctx, body)) return error_reply(*err);
  std::string coll = target_collection(body);
  bson_iter_t pipeline;
  if (!find(body, "pipeline", &pipeline) || !BSON_ITER_HOLDS_ARRAY(&pipeline)) {
    return error_reply(
        CommandError::type_mismatch("'pipeline' option must be specified as an array"));
  }
  bson_iter_t cursorOpt;
  if (!find(body, "cursor", &cursorOpt) || !BSON_ITER_HOLDS_DOCUMENT(&cursorOpt)) {
    return error_reply(CommandError::failed_to_parse(
        "The 'cursor' option is required, except for aggregate with the explain argument"));
  }
  StaticDoc cursorDoc(sub_view(cursorOpt));
  CommandError err;
  auto bs = batch_size(cursorDoc.get(), kDefaultFirstBatch, &err);
  if (!bs) return error_reply(err);

  // Stages in order; a leading $match goes to the store as its filter.
  StaticDoc stages(sub_view(pipeline));
  bson_iter_t st;
  bson_iter_init(&st, stages.get());
  std::vector<std::pair<std::string, BsonView>> list;
  std::vector<Value> args;
  while (bson_iter_next(&st)) {
    if (!BSON_ITER_HOLDS_DOCUMENT(&st))
      return error_reply(
          CommandError::type_mismatch("Each element of the 'pipeline' array must be an object"));
    StaticDoc stage(sub_view(st));
    bson_iter_t s;
    if (!bson_iter_init(&s, stage.get()) || !bson_iter_next(&s)) {
      return error_reply(40323, "Location40323",
                         "A pipeline stage specification object must contain exactly one field.");
    }
    std::string name = bson_iter_key(&s);
    list.emplace_back(name, sub_view(s));
    args.emplace_back(s);
  }
  FindSpec first;
  std::size_t i = 0;
  if (!list.empty() && list[0].first == "$match") {
    first.filter = list[0].second;
    i = 1;
  }
  auto found = ctx.state.store.find(in.db, coll, first);
  if (auto* e = std::get_if<CommandError>(&found)) return error_reply(*e);
  std::vector<BsonBytes> docs = std::move(std::get<0>(found));
  for (; i < list.size(); ++i) {
    const auto& [name, arg] = list[i];
    const bson_iter_t raw = args[i].iter();
    if (name == "$match") {
      if (auto e = validate_filter(arg)) return error_reply(*e);
      StaticDoc f(arg);
      std::erase_if(docs, [&](const BsonBytes& d) {
        StaticDoc sd(d);
        return !matches(sd.get(), f.get());
      });
    } else if (name == "$sort") {
      sort_documents(docs, arg);
    } else if (name == "$skip" || name == "$limit") {
      auto n = as_int64(raw);
      if (!n || *n < 0)
        return error_reply(CommandError::bad_value(name + " must be a non-negative number"));
      auto k = std::min(docs.size(), static_cast<std::size_t>(*n));
      if (name == "$skip") {
        docs.erase(docs.begin(), docs.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        docs.resize(k);
      }
    } else if (name == "$project") {
      for (auto& d : docs) d = project(view_of(d), arg);
    } else if (name == "$count") {
      auto field = as_string(raw);
      if (!field)
        return error_reply(
            CommandError{40156, "Location40156", "the count field must be a non-empty string"});
      std::int64_t n = static_cast<std::int64_t>(docs.size());
      docs.clear();
      if (n > 0) {
        Doc d;
        append_int(d.get(), std::string(*field).c_str(), n);
        docs.push_back(d.bytes());
      }
    } else if (name == "$group") {
      StaticDoc spec(arg);
      auto grouped = group_stage(std::move(docs), spec.get());
      if (auto* e = std::get_if<CommandError>(&grouped)) return error_reply(*e);
      docs = std::move(std::get<0>(grouped));
    } else {
      return error_reply(40324, "Location40324",
                         "Unrecognized pipeline stage name: '" + name + "'");
    }
  }
  std::string ns = ns_of(in, coll);
  Batch b = ctx.state.cursors.open(ns, std::move(docs), *bs, false);
  return cursor_reply(ns, b.docs, b.cursorId, true);
}

}  // namespace

bool run_crud_command(CommandContext& ctx, const CommandInput& in, CommandResult& out) {
  StaticDoc body(in.body);
  const bson_t* b = body.get();
  const std::string& n = in.name;
  if (n == "insert") {
    out.reply = run_insert(ctx, in, b);
  } else if (n == "update") {
    out.reply = run_update(ctx, in, b);
  } else if (n == "delete") {
    out.reply = run_delete(ctx, in, b);
  } else if (n == "find") {
    out.reply = run_find(ctx, in, b);
  } else if (n == "getMore") {
    out.reply = run_get_more(ctx, in, b);
  } else if (n == "killCursors") {
    out.reply = run_kill_cursors(ctx, b);
  } else if (n == "count") {
    out.reply = run_count(ctx, in, b);
  } else if (n == "distinct") {
    out.reply = run_distinct(ctx, in, b);
  } else if (n == "findAndModify" || n == "findandmodify") {
    out.reply = run_find_and_modify(ctx, in, b);
  } else if (n == "aggregate") {
    out.reply = run_aggregate(ctx, in, b);
  } else {
    return false;
  }
  return true;
}

}  // namespace varanus::stub
