#include "store.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace varanus::stub {

std::string id_key(const bson_iter_t& id) {
  // Numbers compare by value across types, so they share one key space.
  Doc d;
  bson_type_t t = bson_iter_type(&id);
  if (t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE) {
    double v = *as_double(id);
    if (t != BSON_TYPE_DOUBLE || (std::trunc(v) == v && std::fabs(v) < 9.2e18)) {
      BSON_APPEND_INT64(d.get(), "",
                        t == BSON_TYPE_DOUBLE ? static_cast<std::int64_t>(v) : *as_int64(id));
    } else {
      BSON_APPEND_DOUBLE(d.get(), "", v);
    }
  } else {
    append_iter(d.get(), "", id);
  }
  const std::uint8_t* p = bson_get_data(d.get());
  return {reinterpret_cast<const char*>(p), d.get()->len};
}

namespace {
// The id key when a filter is exactly {_id: <plain value>} (no operators,
// arrays or regexes, which match more than one stored value).
std::optional<std::string> exact_id_key(const bson_t* filter) {
  bson_iter_t it;
  if (!bson_iter_init(&it, filter) || !bson_iter_next(&it)) return std::nullopt;
  if (std::string_view(bson_iter_key(&it)) != "_id") return std::nullopt;
  bson_type_t t = bson_iter_type(&it);
  if (t == BSON_TYPE_DOCUMENT || t == BSON_TYPE_ARRAY || t == BSON_TYPE_REGEX ||
      t == BSON_TYPE_NULL) {
    return std::nullopt;
  }
  bson_iter_t next = it;
  if (bson_iter_next(&next)) return std::nullopt;
  return id_key(it);
}
}  // namespace

void Store::Collection::reindex() {
  ids.clear();
  for (std::size_t i = 0; i < docs.size(); ++i) {
    StaticDoc d(docs[i]);
    bson_iter_t id;
    if (stub::find(d.get(), "_id", &id)) ids.emplace(id_key(id), i);
  }
}

Store::Collection& Store::collection(const std::string& db, const std::string& coll) {
  return dbs_[db][coll];
}

const Store::Collection* Store::find_collection(const std::string& db,
                                                const std::string& coll) const {
  auto d = dbs_.find(db);
  if (d == dbs_.end()) return nullptr;
  auto c = d->second.find(coll);
  return c == d->second.end() ? nullptr : &c->second;
}

std::optional<WriteError> Store::insert_one(const std::string& db, const std::string& coll,
                                            Collection& c, BsonView doc, std::int32_t index) {
  BsonBytes stored = with_id_first(doc);
  StaticDoc d(stored);
  bson_iter_t id;
  stub::find(d.get(), "_id", &id);
  std::string key = id_key(id);
  if (c.ids.contains(key)) {
    Doc kv;
    append_iter(kv.get(), "_id", id);
    WriteError e{index,
                 {11000, "DuplicateKey",
                  "E11000 duplicate key error collection: " + db + "." + coll +
                      " index: _id_ dup key: { _id: " + render_value(id) + " }"},
                 kv.bytes()};
    return e;
  }
  c.ids.emplace(std::move(key), c.docs.size());
  c.docs.push_back(std::move(stored));
  return std::nullopt;
}

WriteOutcome Store::insert(const std::string& db, const std::string& coll,
                           const std::vector<BsonView>& docs, bool ordered) {
  std::lock_guard lock(mu_);
  Collection& c = collection(db, coll);
  WriteOutcome out;
  for (std::size_t i = 0; i < docs.size(); ++i) {
    if (auto err = insert_one(db, coll, c, docs[i], static_cast<std::int32_t>(i))) {
      out.errors.push_back(std::move(*err));
      if (ordered) break;
      continue;
    }
    ++out.n;
  }
  return out;
}

WriteOutcome Store::update(const std::string& db, const std::string& coll,
                           const std::vector<UpdateStatement>& updates, bool ordered) {
  std::lock_guard lock(mu_);
  Collection& c = collection(db, coll);
  WriteOutcome out;
  for (std::size_t i = 0; i < updates.size(); ++i) {
    const UpdateStatement& st = updates[i];
    auto index = static_cast<std::int32_t>(i);
    std::optional<CommandError> err = validate_filter(st.q);
    if (!err) err = validate_update(st.u);
    if (!err && st.multi && !is_operator_update(st.u)) {
      err = CommandError::failed_to_parse(
          "multi update is not supported for replacement-style update");
    }
    StaticDoc q(st.q);
    std::int64_t matched = 0;
    for (std::size_t pos = 0; !err && pos < c.docs.size(); ++pos) {
      StaticDoc d(c.docs[pos]);
      if (!matches(d.get(), q.get())) continue;
      ++matched;
      Updated u = apply_update(view_of(c.docs[pos]), st.u, false);
      if (u.error) {
        err = u.error;
        break;
      }
      if (*u.doc != c.docs[pos]) {
        c.docs[pos] = std::move(*u.doc);
        ++out.nModified;
      }
      if (!st.multi) break;
    }
    if (!err && matched == 0 && st.upsert) {
      BsonBytes seed = upsert_seed(st.q);
      Updated u = apply_update(view_of(seed), st.u, true);
      if (u.error) {
        err = u.error;
      } else if (auto dup = insert_one(db, coll, c, view_of(*u.doc), index)) {
        err = dup->error;
      } else {
        StaticDoc inserted(c.docs.back());
        bson_iter_t id;
        stub::find(inserted.get(), "_id", &id);
        Doc idDoc;
        append_iter(idDoc.get(), "_id", id);
        out.upserted.emplace_back(index, idDoc.bytes());
        ++out.n;
      }
    }
    if (err) {
      out.errors.push_back({index, std::move(*err), {}});
      if (ordered) break;
      continue;
    }
    out.n += matched;
  }
  return out;
}

WriteOutcome Store::remove(const std::string& db, const std::string& coll,
                           const std::vector<DeleteStatement>& deletes, bool ordered) {
  std::lock_guard lock(mu_);
  WriteOutcome out;
  auto d = dbs_.find(db);
  Collection* c = nullptr;
  if (d != dbs_.end()) {
    auto it = d->second.find(coll);
    if (it != d->second.end()) c = &it->second;
  }
  for (std::size_t i = 0; i < deletes.size(); ++i) {
    const DeleteStatement& st = deletes[i];
    if (auto err = validate_filter(st.q)) {
      out.errors.push_back({static_cast<std::int32_t>(i), std::move(*err), {}});
      if (ordered) break;
      continue;
    }
    if (c == nullptr) continue;
    StaticDoc q(st.q);
    std::vector<BsonBytes> kept;
    kept.reserve(c->docs.size());
    std::int64_t removed = 0;
    for (auto& doc : c->docs) {
      StaticDoc sd(doc);
      bool gone = (st.limit == 0 || removed == 0) && matches(sd.get(), q.get());
      if (gone) {
        ++removed;
      } else {
        kept.push_back(std::move(doc));
      }
    }
    if (removed > 0) {
      c->docs = std::move(kept);
      c->reindex();
    }
    out.n += removed;
  }
  return out;
}

std::variant<std::vector<BsonBytes>, CommandError> Store::find(const std::string& db,
                                                               const std::string& coll,
                                                               const FindSpec& spec) const {
  if (auto err = validate_filter(spec.filter)) return *err;
  std::vector<BsonBytes> result;
  {
    std::lock_guard lock(mu_);
    const Collection* c = find_collection(db, coll);
    if (c == nullptr) return result;
    StaticDoc q(spec.filter);
    if (auto key = exact_id_key(q.get())) {
      // {_id: value}: the unique index answers without a scan.
      if (auto it = c->ids.find(*key); it != c->ids.end()) result.push_back(c->docs[it->second]);
    } else {
      for (const auto& doc : c->docs) {
        StaticDoc d(doc);
        if (spec.filter.empty() || matches(d.get(), q.get())) result.push_back(doc);
        // Without a sort, stop as soon as skip + limit documents are found.
        if (spec.sort.empty() && spec.limit > 0 &&
            result.size() >= static_cast<std::size_t>(spec.skip + spec.limit)) {
          break;
        }
      }
    }
  }
  sort_documents(result, spec.sort);
  if (spec.skip > 0) {
    auto skip = std::min(result.size(), static_cast<std::size_t>(spec.skip));
    result.erase(result.begin(), result.begin() + static_cast<std::ptrdiff_t>(skip));
  }
  if (spec.limit > 0 && result.size() > static_cast<std::size_t>(spec.limit)) {
    result.resize(static_cast<std::size_t>(spec.limit));
  }
  if (!spec.projection.empty()) {
    for (auto& doc : result) doc = project(view_of(doc), spec.projection);
  }
  return result;
}

std::variant<FindAndModifyOutcome, CommandError> Store::find_and_modify(
    const std::string& db, const std::string& coll, const FindAndModifySpec& spec) {
  if (auto err = validate_filter(spec.query)) return *err;
  if (!spec.remove) {
    if (auto err = validate_update(spec.update)) return *err;
  }
  std::lock_guard lock(mu_);
  Collection& c = collection(db, coll);
  // The first match in sort order (insertion order without a sort).
  StaticDoc q(spec.query);
  std::vector<std::size_t> matched;
  for (std::size_t pos = 0; pos < c.docs.size(); ++pos) {
    StaticDoc d(c.docs[pos]);
    if (spec.query.empty() || matches(d.get(), q.get())) matched.push_back(pos);
  }
  if (!spec.sort.empty() && matched.size() > 1) {
    std::vector<BsonBytes> candidates;
    for (auto pos : matched) candidates.push_back(c.docs[pos]);
    sort_documents(candidates, spec.sort);
    auto first = std::find(c.docs.begin(), c.docs.end(), candidates.front());
    matched = {static_cast<std::size_t>(first - c.docs.begin())};
  }
  FindAndModifyOutcome out;
  auto projected = [&](const BsonBytes& doc) {
    return spec.fields.empty() ? doc : project(view_of(doc), spec.fields);
  };
  if (matched.empty()) {
    if (spec.remove || !spec.upsert) return out;
    BsonBytes seed = upsert_seed(spec.query);
    Updated u = apply_update(view_of(seed), spec.update, true);
    if (u.error) return *u.error;
    if (auto dup = insert_one(db, coll, c, view_of(*u.doc), 0)) return dup->error;
    StaticDoc inserted(c.docs.back());
    bson_iter_t id;
    stub::find(inserted.get(), "_id", &id);
    Doc idDoc;
    append_iter(idDoc.get(), "_id", id);
    out.upserted = idDoc.bytes();
    out.n = 1;
    if (spec.returnNew) out.value = projected(c.docs.back());
    return out;
  }
  std::size_t pos = matched.front();
  out.n = 1;
  if (spec.remove) {
    out.value = projected(c.docs[pos]);
    c.docs.erase(c.docs.begin() + static_cast<std::ptrdiff_t>(pos));
    c.reindex();
    return out;
  }
  Updated u = apply_update(view_of(c.docs[pos]), spec.update, false);
  if (u.error) return *u.error;
  out.updatedExisting = true;
  if (!spec.returnNew) out.value = projected(c.docs[pos]);
  c.docs[pos] = std::move(*u.doc);
  if (spec.returnNew) out.value = projected(c.docs[pos]);
  return out;
}

bool Store::drop_collection(const std::string& db, const std::string& coll) {
  std::lock_guard lock(mu_);
  auto d = dbs_.find(db);
  if (d == dbs_.end()) return false;
  bool erased = d->second.erase(coll) > 0;
  if (d->second.empty()) dbs_.erase(d);
  return erased;
}

void Store::drop_database(const std::string& db) {
  std::lock_guard lock(mu_);
  dbs_.erase(db);
}

bool Store::create_collection(const std::string& db, const std::string& coll) {
  std::lock_guard lock(mu_);
  return dbs_[db].try_emplace(coll).second;
}

namespace {
BsonBytes id_index_spec() {
  Doc spec;
  BSON_APPEND_INT32(spec.get(), "v", 2);
  bson_t key;
  BSON_APPEND_DOCUMENT_BEGIN(spec.get(), "key", &key);
  BSON_APPEND_INT32(&key, "_id", 1);
  bson_append_document_end(spec.get(), &key);
  BSON_APPEND_UTF8(spec.get(), "name", "_id_");
  return spec.bytes();
}
}  // namespace

std::vector<CollectionInfo> Store::collections(const std::string& db) const {
  std::lock_guard lock(mu_);
  std::vector<CollectionInfo> out;
  auto d = dbs_.find(db);
  if (d == dbs_.end()) return out;
  for (const auto& [name, c] : d->second) {
    CollectionInfo info{name, {id_index_spec()}};
    info.indexes.insert(info.indexes.end(), c.indexes.begin(), c.indexes.end());
    out.push_back(std::move(info));
  }
  return out;
}

bool Store::has_collection(const std::string& db, const std::string& coll) const {
  std::lock_guard lock(mu_);
  return find_collection(db, coll) != nullptr;
}

std::vector<DatabaseInfo> Store::databases() const {
  std::lock_guard lock(mu_);
  std::vector<DatabaseInfo> out;
  for (const auto& [name, colls] : dbs_) {
    DatabaseInfo info{name, 0, true};
    for (const auto& [cname, c] : colls) {
      for (const auto& doc : c.docs) info.sizeOnDisk += static_cast<std::int64_t>(doc.size());
      info.empty = info.empty && c.docs.empty();
    }
    // mongod reports a few KiB even for an empty database's files.
    info.sizeOnDisk += 8192;
    out.push_back(std::move(info));
  }
  return out;
}

Store::IndexOutcome Store::create_indexes(const std::string& db, const std::string& coll,
                                          const std::vector<BsonView>& specs) {
  std::lock_guard lock(mu_);
  IndexOutcome out;
  Database& d = dbs_[db];
  auto [it, created] = d.try_emplace(coll);
  out.created = created;
  Collection& c = it->second;
  out.before = static_cast<std::int32_t>(c.indexes.size() + 1);
  for (const auto& spec : specs) {
    StaticDoc s(spec);
    auto name = get_string(s.get(), "name");
    if (!name || *name == "_id_") continue;
    bool exists = false;
    for (const auto& existing : c.indexes) {
      StaticDoc e(existing);
      exists = exists || get_string(e.get(), "name") == name;
    }
    if (exists) continue;
    Doc stored;
    BSON_APPEND_INT32(stored.get(), "v", 2);
    bson_iter_t f;
    bson_iter_init(&f, s.get());
    while (bson_iter_next(&f)) {
      if (std::string_view(bson_iter_key(&f)) != "v")
        append_iter(stored.get(), bson_iter_key(&f), f);
    }
    c.indexes.push_back(stored.bytes());
  }
  out.after = static_cast<std::int32_t>(c.indexes.size() + 1);
  return out;
}

bool Store::drop_indexes(const std::string& db, const std::string& coll, const std::string& name,
                         std::int32_t* before) {
  std::lock_guard lock(mu_);
  auto d = dbs_.find(db);
  if (d == dbs_.end()) return false;
  auto it = d->second.find(coll);
  if (it == d->second.end()) return false;
  auto& indexes = it->second.indexes;
  *before = static_cast<std::int32_t>(indexes.size() + 1);
  if (name == "*") {
    indexes.clear();
    return true;
  }
  for (auto i = indexes.begin(); i != indexes.end(); ++i) {
    StaticDoc s(*i);
    if (get_string(s.get(), "name") == name) {
      indexes.erase(i);
      return true;
    }
  }
  return false;
}

}  // namespace varanus::stub
