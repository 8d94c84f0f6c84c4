// varanus::wire — a fast BSON -> relaxed Extended JSON writer.
//
// Walks the document (BsonWalk) straight into an output string, compact
// (no padding spaces), and bounds the output while writing: once `maxLength`
// characters of JSON have been produced it stops, closes every open
// string/array/object so the result is still valid JSON, and never cuts a
// UTF-8 code point. ~10x faster than bson_as_relaxed_extended_json.
#pragma once

#include <cstddef>
#include <string>

#include "varanus/wire/bson_view.hpp"

namespace varanus::wire {

struct JsonOptions {
  /// 0 = unlimited; else the budget in bytes of JSON text. Elements that do
  /// not fit are left out whole (strings are cut at a code point); the
  /// brackets that close what is open are written after the budget, so the
  /// output may exceed it by the nesting depth (the root's '}' included).
  std::size_t maxLength = 0;
  /// Canonical Extended JSON for numbers and dates: {"$numberInt":"1"},
  /// {"$numberLong":"..."}, {"$numberDouble":"1.5"}, {"$date":{"$numberLong":"..."}},
  /// so every value keeps its BSON type (and int64 its 64 bits in JSON
  /// readers that parse numbers as doubles). Other types as relaxed (their
  /// relaxed and canonical forms are the same).
  bool canonical = false;
};

struct JsonResult {
  bool truncated = false;  ///< the document was cut to fit maxLength
  bool valid = true;       ///< false if the BSON could not be walked (output is then "{}")
};

/// Appends the relaxed Extended JSON of `doc` to `out`. Values follow
/// libbson's relaxed form (numbers plain, {"$oid":..}, {"$date":"ISO"},
/// {"$numberDecimal":..}, {"$binary":{"base64":..,"subType":..}}, ...).
JsonResult append_relaxed_json(std::string& out, BsonView doc, const JsonOptions& options = {});

/// Appends `s` as a JSON string literal (quotes and escapes), replacing
/// invalid UTF-8 with U+FFFD.
void append_json_string(std::string& out, std::string_view s);

/// True when `s` can be written between quotes as is (no control character,
/// '"', '\\' or non-ASCII byte): append_json_string would add only quotes.
bool json_plain(std::string_view s) noexcept;

}  // namespace varanus::wire
