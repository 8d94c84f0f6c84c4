// varanus-stub — query and update semantics on single documents: the subset
// of MongoDB's matcher, sort, projection and update operators that drivers'
// test workloads use. Pure functions; the Store applies them under its lock.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "doc.hpp"

namespace varanus::stub {

/// A server error as mongod reports it: {ok: 0, errmsg, code, codeName}.
struct CommandError {
  int code = 0;
  std::string codeName;
  std::string errmsg;

  static CommandError bad_value(std::string msg) { return {2, "BadValue", std::move(msg)}; }
  static CommandError failed_to_parse(std::string msg) {
    return {9, "FailedToParse", std::move(msg)};
  }
  static CommandError type_mismatch(std::string msg) {
    return {14, "TypeMismatch", std::move(msg)};
  }
};

/// Checks a filter's operators: nullopt when every operator is supported
/// ($eq $ne $gt $gte $lt $lte $in $nin $exists, $and $or $nor, $comment).
std::optional<CommandError> validate_filter(BsonView filter);
/// True when `doc` matches the (validated) filter. Equality on a dotted or
/// top-level path; an array field matches when one of its elements does.
bool matches(const bson_t* doc, const bson_t* filter);

/// Sorts by a spec {field: 1|-1, ...} (stable; missing fields sort as null).
void sort_documents(std::vector<BsonBytes>& docs, BsonView spec);

/// Applies an inclusion ({a: 1}) or exclusion ({a: 0}) projection of
/// top-level fields; _id is kept unless excluded. Empty spec: a copy.
BsonBytes project(BsonView doc, BsonView spec);

/// True when the first key of `update` starts with '$' (an operator update).
bool is_operator_update(BsonView update);
/// Validates an update document (operators $set $unset $inc $setOnInsert,
/// or a replacement without operators).
std::optional<CommandError> validate_update(BsonView update);
/// The document after `update` ($set/$unset/$inc or replacement, keeping
/// _id). `inserting` applies $setOnInsert (upsert). Error if _id would change
/// or $inc meets a non-number.
struct Updated {
  std::optional<BsonBytes> doc;
  std::optional<CommandError> error;
};
Updated apply_update(BsonView original, BsonView update, bool inserting);

/// The document an upsert starts from: the filter's equality fields.
BsonBytes upsert_seed(BsonView filter);

/// Puts _id first, generating an ObjectId when it is missing (as mongod
/// stores documents).
BsonBytes with_id_first(BsonView doc);

}  // namespace varanus::stub
