#include "match.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <string_view>

namespace varanus::stub {
namespace {

bool starts_with_dollar(const char* key) {
  return key[0] == '$';
}

bool is_operator_doc(const bson_iter_t& it) {
  if (!BSON_ITER_HOLDS_DOCUMENT(&it)) return false;
  StaticDoc d(sub_view(it));
  bson_iter_t c;
  return bson_iter_init(&c, d.get()) && bson_iter_next(&c) && starts_with_dollar(bson_iter_key(&c));
}

constexpr std::array<std::string_view, 9> kFieldOperators = {"$eq",  "$ne", "$gt",  "$gte",   "$lt",
                                                             "$lte", "$in", "$nin", "$exists"};

std::optional<CommandError> validate_operators(const bson_iter_t& value) {
  StaticDoc ops(sub_view(value));
  bson_iter_t op;
  bson_iter_init(&op, ops.get());
  while (bson_iter_next(&op)) {
    std::string_view name = bson_iter_key(&op);
    if (std::find(kFieldOperators.begin(), kFieldOperators.end(), name) == kFieldOperators.end()) {
      return CommandError::bad_value("unknown operator: " + std::string(name));
    }
    if ((name == "$in" || name == "$nin") && !BSON_ITER_HOLDS_ARRAY(&op)) {
      return CommandError::bad_value("$in needs an array");
    }
  }
  return std::nullopt;
}

// Calls pred on the value at `path` (nullptr when missing) and, for an
// array value, on each element too; true when any call is true.
bool any_value(const bson_t* doc, const char* path,
               const std::function<bool(const bson_iter_t*)>& pred) {
  bson_iter_t it;
  if (!find_path(doc, path, &it)) return pred(nullptr);
  if (pred(&it)) return true;
  if (BSON_ITER_HOLDS_ARRAY(&it)) {
    StaticDoc arr(sub_view(it));
    bson_iter_t e;
    bson_iter_init(&e, arr.get());
    while (bson_iter_next(&e)) {
      if (pred(&e)) return true;
    }
  }
  return false;
}

bool equals(const bson_iter_t* field, const bson_iter_t& value) {
  return compare_optional(field, &value) == 0 &&
         // null matches missing, but a missing field is not equal to non-null.
         (field != nullptr || BSON_ITER_HOLDS_NULL(&value));
}

bool in_array(const bson_iter_t* field, const bson_iter_t& array) {
  StaticDoc arr(sub_view(array));
  bson_iter_t e;
  bson_iter_init(&e, arr.get());
  while (bson_iter_next(&e)) {
    if (equals(field, e)) return true;
  }
  return false;
}

// Comparison operators only match values of the same type class.
bool same_class_compare(const bson_iter_t* field, const bson_iter_t& value,
                        const std::function<bool(int)>& ok) {
  if (field == nullptr) return false;
  bson_type_t a = bson_iter_type(field);
  bson_type_t b = bson_iter_type(&value);
  auto numeric = [](bson_type_t t) {
    return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE ||
           t == BSON_TYPE_DECIMAL128;
  };
  if (a != b && !(numeric(a) && numeric(b))) return false;
  return ok(compare_values(*field, value));
}

bool match_operator(const bson_t* doc, const char* path, const bson_iter_t& op) {
  std::string_view name = bson_iter_key(&op);
  if (name == "$exists") {
    bson_iter_t it;
    return find_path(doc, path, &it) == as_bool(op);
  }
  if (name == "$ne")
    return !any_value(doc, path, [&](const bson_iter_t* v) { return equals(v, op); });
  if (name == "$nin") {
    return !any_value(doc, path, [&](const bson_iter_t* v) { return in_array(v, op); });
  }
  return any_value(doc, path, [&](const bson_iter_t* v) {
    if (name == "$eq") return equals(v, op);
    if (name == "$in") return in_array(v, op);
    if (name == "$gt") return same_class_compare(v, op, [](int c) { return c > 0; });
    if (name == "$gte") return same_class_compare(v, op, [](int c) { return c >= 0; });
    if (name == "$lt") return same_class_compare(v, op, [](int c) { return c < 0; });
    if (name == "$lte") return same_class_compare(v, op, [](int c) { return c <= 0; });
    return false;
  });
}

}  // namespace

std::optional<CommandError> validate_filter(BsonView filter) {
  if (filter.empty()) return std::nullopt;
  StaticDoc f(filter);
  if (!f.ok()) return CommandError::bad_value("filter is not a valid BSON document");
  bson_iter_t it;
  bson_iter_init(&it, f.get());
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    if (key == "$and" || key == "$or" || key == "$nor") {
      if (!BSON_ITER_HOLDS_ARRAY(&it)) {
        return CommandError::bad_value(std::string(key) + " must be an array");
      }
      StaticDoc arr(sub_view(it));
      bson_iter_t e;
      bson_iter_init(&e, arr.get());
      while (bson_iter_next(&e)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&e)) {
          return CommandError::bad_value(std::string(key) +
                                         "/$or/$nor entries need to be full objects");
        }
        if (auto err = validate_filter(sub_view(e))) return err;
      }
    } else if (key == "$comment") {
      continue;
    } else if (key.starts_with('$')) {
      return CommandError::bad_value("unknown top level operator: " + std::string(key));
    } else if (is_operator_doc(it)) {
      if (auto err = validate_operators(it)) return err;
    }
  }
  return std::nullopt;
}

bool matches(const bson_t* doc, const bson_t* filter) {
  bson_iter_t it;
  if (!bson_iter_init(&it, filter)) return true;
  while (bson_iter_next(&it)) {
    const char* key = bson_iter_key(&it);
    std::string_view k = key;
    if (k == "$and" || k == "$or" || k == "$nor") {
      StaticDoc arr(sub_view(it));
      bson_iter_t e;
      bson_iter_init(&e, arr.get());
      bool any = false;
      bool all = true;
      while (bson_iter_next(&e)) {
        StaticDoc sub(sub_view(e));
        bool m = matches(doc, sub.get());
        any = any || m;
        all = all && m;
      }
      if ((k == "$and" && !all) || (k == "$or" && !any) || (k == "$nor" && any)) return false;
    } else if (k == "$comment") {
      continue;
    } else if (is_operator_doc(it)) {
      StaticDoc ops(sub_view(it));
      bson_iter_t op;
      bson_iter_init(&op, ops.get());
      while (bson_iter_next(&op)) {
        if (!match_operator(doc, key, op)) return false;
      }
    } else if (!any_value(doc, key, [&](const bson_iter_t* v) { return equals(v, it); })) {
      return false;
    }
  }
  return true;
}

void sort_documents(std::vector<BsonBytes>& docs, BsonView spec) {
  if (spec.empty()) return;
  StaticDoc s(spec);
  std::vector<std::pair<std::string, int>> keys;
  bson_iter_t it;
  bson_iter_init(&it, s.get());
  while (bson_iter_next(&it)) {
    keys.emplace_back(bson_iter_key(&it), as_int64(it).value_or(1) < 0 ? -1 : 1);
  }
  if (keys.empty()) return;
  std::stable_sort(docs.begin(), docs.end(), [&](const BsonBytes& a, const BsonBytes& b) {
    StaticDoc da(a);
    StaticDoc db(b);
    for (const auto& [path, dir] : keys) {
      bson_iter_t ia;
      bson_iter_t ib;
      bool ha = find_path(da.get(), path, &ia);
      bool hb = find_path(db.get(), path, &ib);
      int c = compare_optional(ha ? &ia : nullptr, hb ? &ib : nullptr);
      if (c != 0) return dir * c < 0;
    }
    return false;
  });
}

BsonBytes project(BsonView doc, BsonView spec) {
  StaticDoc d(doc);
  StaticDoc s(spec);
  std::set<std::string, std::less<>> fields;
  bool inclusion = false;
  bool keep_id = true;
  bson_iter_t it;
  if (!spec.empty() && bson_iter_init(&it, s.get())) {
    while (bson_iter_next(&it)) {
      std::string_view key = bson_iter_key(&it);
      bool on = as_bool(it) || BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_UTF8(&it);
      if (key == "_id") {
        keep_id = on;
        continue;
      }
      inclusion = inclusion || on;
      fields.emplace(key.substr(0, key.find('.')));
    }
  }
  if (fields.empty() && keep_id) return {doc.data, doc.data + doc.size};
  Doc out;
  bson_iter_init(&it, d.get());
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    bool keep = key == "_id" ? keep_id : (fields.contains(key) == inclusion);
    if (keep) append_iter(out.get(), key, it);
  }
  return out.bytes();
}

bool is_operator_update(BsonView update) {
  StaticDoc u(update);
  bson_iter_t it;
  return bson_iter_init(&it, u.get()) && bson_iter_next(&it) &&
         starts_with_dollar(bson_iter_key(&it));
}

namespace {
constexpr std::array<std::string_view, 4> kUpdateOperators = {"$set", "$unset", "$inc",
                                                              "$setOnInsert"};
}

std::optional<CommandError> validate_update(BsonView update) {
  StaticDoc u(update);
  if (!u.ok()) return CommandError::failed_to_parse("update is not a valid BSON document");
  bool ops = is_operator_update(update);
  bson_iter_t it;
  bson_iter_init(&it, u.get());
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    if (!ops) {
      if (key.starts_with('$')) {
        return CommandError::bad_value(
            "The dollar ($) prefixed field '" + std::string(key) + "' in '" + std::string(key) +
            "' is not allowed in the context of an update's replacement document.");
      }
      continue;
    }
    if (std::find(kUpdateOperators.begin(), kUpdateOperators.end(), key) ==
        kUpdateOperators.end()) {
      return CommandError::failed_to_parse(
          "Unknown modifier: " + std::string(key) +
          ". Expected a valid update modifier or pipeline-style update specified as an array");
    }
    if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
      return CommandError::failed_to_parse(
          "Modifiers operate on fields but we found type " +
          std::string(bson_iter_type(&it) == BSON_TYPE_UTF8 ? "string" : "a non-object") +
          " instead. For example: {$mod: {<field>: ...}} not {" + std::string(key) + ": ...}");
    }
    StaticDoc fields(sub_view(it));
    bson_iter_t f;
    bson_iter_init(&f, fields.get());
    while (bson_iter_next(&f)) {
      if (std::strchr(bson_iter_key(&f), '.') != nullptr) {
        return CommandError::bad_value(
            "varanus-stub: dotted paths in update operators are not supported");
      }
    }
  }
  return std::nullopt;
}

namespace {

// Adds two numbers as mongod's $inc does: int32 widens to int64 on overflow,
// any double makes a double.
void append_sum(bson_t* out, std::string_view key, const bson_iter_t* current,
                const bson_iter_t& inc) {
  bson_type_t a = current ? bson_iter_type(current) : BSON_TYPE_INT32;
  bson_type_t b = bson_iter_type(&inc);
  int klen = static_cast<int>(key.size());
  if (a == BSON_TYPE_DOUBLE || b == BSON_TYPE_DOUBLE) {
    double sum = (current ? *as_double(*current) : 0.0) + *as_double(inc);
    bson_append_double(out, key.data(), klen, sum);
    return;
  }
  std::int64_t x = current ? *as_int64(*current) : 0;
  std::int64_t y = *as_int64(inc);
  std::int64_t sum = x + y;
  if (a == BSON_TYPE_INT32 && b == BSON_TYPE_INT32 &&
      sum >= std::numeric_limits<std::int32_t>::min() &&
      sum <= std::numeric_limits<std::int32_t>::max()) {
    bson_append_int32(out, key.data(), klen, static_cast<std::int32_t>(sum));
  } else {
    bson_append_int64(out, key.data(), klen, sum);
  }
}

bool is_number(const bson_iter_t& it) {
  bson_type_t t = bson_iter_type(&it);
  return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE;
}

CommandError immutable_id() {
  return {66, "ImmutableField",
          "Performing an update on the path '_id' would modify the immutable field '_id'"};
}

Updated apply_replacement(const bson_t* orig, BsonView update) {
  StaticDoc u(update);
  bson_iter_t orig_id;
  bool has_orig_id = find(orig, "_id", &orig_id);
  bson_iter_t new_id;
  bool has_new_id = find(u.get(), "_id", &new_id);
  if (has_orig_id && has_new_id && compare_values(orig_id, new_id) != 0)
    return {{}, immutable_id()};
  Doc out;
  if (has_orig_id) append_iter(out.get(), "_id", orig_id);
  bson_iter_t it;
  bson_iter_init(&it, u.get());
  while (bson_iter_next(&it)) {
    if (has_orig_id && std::string_view(bson_iter_key(&it)) == "_id") continue;
    append_iter(out.get(), bson_iter_key(&it), it);
  }
  return {out.bytes(), std::nullopt};
}

}  // namespace

Updated apply_update(BsonView original, BsonView update, bool inserting) {
  StaticDoc orig(original);
  if (!is_operator_update(update)) return apply_replacement(orig.get(), update);

  // Field -> (operator, value) for $set/$unset/$inc (+ $setOnInsert when inserting).
  StaticDoc u(update);
  struct Change {
    std::string field;
    std::string op;
    Value value;
  };
  std::vector<Change> changes;
  bson_iter_t it;
  bson_iter_init(&it, u.get());
  while (bson_iter_next(&it)) {
    std::string op = bson_iter_key(&it);
    if (op == "$setOnInsert") {
      if (!inserting) continue;
      op = "$set";
    }
    bson_iter_t f;
    bson_iter_recurse(&it, &f);
    while (bson_iter_next(&f)) changes.push_back({bson_iter_key(&f), op, Value(f)});
  }
  auto change_for = [&](std::string_view field) -> const Change* {
    const Change* found = nullptr;
    for (const auto& c : changes) {
      if (c.field == field) found = &c;
    }
    return found;
  };

  Doc out;
  std::set<std::string, std::less<>> done;
  bson_iter_init(&it, orig.get());
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    const Change* c = change_for(key);
    if (c == nullptr) {
      append_iter(out.get(), key, it);
      continue;
    }
    done.emplace(key);
    const bson_iter_t value = c->value.iter();
    if (key == "_id" && (c->op != "$set" || compare_values(it, value) != 0)) {
      return {{}, immutable_id()};
    }
    if (c->op == "$set") {
      append_iter(out.get(), key, value);
    } else if (c->op == "$inc") {
      if (!is_number(it) || !is_number(value)) {
        return {{},
                CommandError::type_mismatch("Cannot apply $inc to a value of non-numeric type. "
                                            "The field '" +
                                            std::string(key) + "' has a non-numeric type")};
      }
      append_sum(out.get(), key, &it, value);
    }
    // $unset: drop the field.
  }
  for (const auto& c : changes) {
    if (done.contains(c.field) || c.op == "$unset") continue;
    done.emplace(c.field);
    const Change* last = change_for(c.field);
    const bson_iter_t value = last->value.iter();
    if (last->op == "$set") {
      append_iter(out.get(), c.field, value);
    } else if (last->op == "$inc") {
      if (!is_number(value)) {
        return {{}, CommandError::type_mismatch("Cannot increment with non-numeric argument")};
      }
      append_sum(out.get(), c.field, nullptr, value);
    }
  }
  return {out.bytes(), std::nullopt};
}

BsonBytes upsert_seed(BsonView filter) {
  Doc out;
  StaticDoc f(filter);
  bson_iter_t it;
  if (filter.empty() || !bson_iter_init(&it, f.get())) return out.bytes();
  while (bson_iter_next(&it)) {
    const char* key = bson_iter_key(&it);
    if (starts_with_dollar(key) || std::strchr(key, '.') != nullptr) continue;
    if (is_operator_doc(it)) {
      bson_iter_t eq;
      StaticDoc ops(sub_view(it));
      if (find(ops.get(), "$eq", &eq)) append_iter(out.get(), key, eq);
      continue;
    }
    append_iter(out.get(), key, it);
  }
  return out.bytes();
}

BsonBytes with_id_first(BsonView doc) {
  StaticDoc d(doc);
  bson_iter_t id;
  Doc out;
  bool has_id = find(d.get(), "_id", &id);
  if (has_id) {
    bson_iter_t first;
    if (bson_iter_init(&first, d.get()) && bson_iter_next(&first) &&
        std::string_view(bson_iter_key(&first)) == "_id") {
      return {doc.data, doc.data + doc.size};
    }
    append_iter(out.get(), "_id", id);
  } else {
    bson_oid_t oid;
    bson_oid_init(&oid, nullptr);
    BSON_APPEND_OID(out.get(), "_id", &oid);
  }
  bson_iter_t it;
  bson_iter_init(&it, d.get());
  while (bson_iter_next(&it)) {
    if (std::string_view(bson_iter_key(&it)) != "_id")
      append_iter(out.get(), bson_iter_key(&it), it);
  }
  return out.bytes();
}

}  // namespace varanus::stub
