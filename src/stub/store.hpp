// varanus-stub — the in-memory data store: databases of collections of BSON
// documents in insertion order, with a unique _id index. One mutex guards
// everything; the stub is a test tool and its commands are short.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "match.hpp"

namespace varanus::stub {

struct WriteError {
  std::int32_t index = 0;
  CommandError error;
  BsonBytes keyValue;  ///< {_id: v} for a duplicate key, else empty
};

struct WriteOutcome {
  std::int64_t n = 0;
  std::int64_t nModified = 0;
  std::vector<std::pair<std::int32_t, BsonBytes>> upserted;  ///< index, {_id: v}
  std::vector<WriteError> errors;
};

struct FindSpec {
  BsonView filter;
  BsonView sort;
  BsonView projection;
  std::int64_t skip = 0;
  std::int64_t limit = 0;  ///< 0 = no limit
};

struct UpdateStatement {
  BsonView q;
  BsonView u;
  bool upsert = false;
  bool multi = false;
};

struct DeleteStatement {
  BsonView q;
  std::int64_t limit = 0;  ///< 0 = all, 1 = one
};

struct FindAndModifySpec {
  BsonView query;
  BsonView sort;
  BsonView update;
  BsonView fields;
  bool remove = false;
  bool returnNew = false;
  bool upsert = false;
};

struct FindAndModifyOutcome {
  std::optional<BsonBytes> value;  ///< the document before (or after, with new) the change
  std::int64_t n = 0;
  bool updatedExisting = false;
  BsonBytes upserted;  ///< {_id: v} when an upsert inserted, else empty
};

struct CollectionInfo {
  std::string name;
  std::vector<BsonBytes> indexes;  ///< index specs, _id_ first
};

struct DatabaseInfo {
  std::string name;
  std::int64_t sizeOnDisk = 0;
  bool empty = true;
};

class Store {
 public:
  WriteOutcome insert(const std::string& db, const std::string& coll,
                      const std::vector<BsonView>& docs, bool ordered);
  WriteOutcome update(const std::string& db, const std::string& coll,
                      const std::vector<UpdateStatement>& updates, bool ordered);
  WriteOutcome remove(const std::string& db, const std::string& coll,
                      const std::vector<DeleteStatement>& deletes, bool ordered);

  /// Matching documents, sorted, skipped, limited and projected.
  std::variant<std::vector<BsonBytes>, CommandError> find(const std::string& db,
                                                          const std::string& coll,
                                                          const FindSpec& spec) const;

  /// findAndModify: one document found, sorted, then updated or removed atomically.
  std::variant<FindAndModifyOutcome, CommandError> find_and_modify(const std::string& db,
                                                                   const std::string& coll,
                                                                   const FindAndModifySpec& spec);

  /// False when the collection does not exist.
  bool drop_collection(const std::string& db, const std::string& coll);
  void drop_database(const std::string& db);
  /// False when it already exists.
  bool create_collection(const std::string& db, const std::string& coll);
  std::vector<CollectionInfo> collections(const std::string& db) const;
  bool has_collection(const std::string& db, const std::string& coll) const;
  std::vector<DatabaseInfo> databases() const;
  /// Adds index specs (by name, existing names are kept); returns the
  /// number of indexes before and after, and whether the collection was created.
  struct IndexOutcome {
    std::int32_t before = 0;
    std::int32_t after = 0;
    bool created = false;
  };
  IndexOutcome create_indexes(const std::string& db, const std::string& coll,
                              const std::vector<BsonView>& specs);
  /// Drops every index but _id_ ("*") or one by name; false if not found.
  bool drop_indexes(const std::string& db, const std::string& coll, const std::string& name,
                    std::int32_t* before);

 private:
  struct Collection {
    std::vector<BsonBytes> docs;
    std::unordered_map<std::string, std::size_t> ids;  ///< id key -> position in docs
    std::vector<BsonBytes> indexes;                    ///< beyond _id_
    void reindex();
  };
  using Database = std::map<std::string, Collection>;

  Collection& collection(const std::string& db, const std::string& coll);
  const Collection* find_collection(const std::string& db, const std::string& coll) const;
  std::optional<WriteError> insert_one(const std::string& db, const std::string& coll,
                                       Collection& c, BsonView doc, std::int32_t index);

  mutable std::mutex mu_;
  std::map<std::string, Database> dbs_;
};

/// A canonical key for an _id value: equal values (1, 1.0, Int64(1)) give equal keys.
std::string id_key(const bson_iter_t& id);

}  // namespace varanus::stub
