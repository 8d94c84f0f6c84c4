#include "varanus/monitor/classify.hpp"

#include <array>
#include <cctype>

namespace varanus::monitor {
namespace {

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

constexpr std::array<std::string_view, 9> kSensitive = {
    "authenticate", "saslStart",      "saslContinue",    "getnonce", "createUser",
    "updateUser",   "copydbgetnonce", "copydbsaslstart", "copydb",
};

}  // namespace

bool is_sensitive_command(std::string_view name) noexcept {
  for (auto s : kSensitive)
    if (iequals(name, s)) return true;
  return false;
}

bool is_hello(std::string_view name) noexcept {
  return iequals(name, "hello") || iequals(name, "ismaster");
}

bool should_redact(std::string_view name, wire::BsonView body) noexcept {
  if (is_sensitive_command(name)) return true;
  if (!is_hello(name)) return false;
  bson_t doc;
  if (!body.init_static(&doc)) return false;
  bson_iter_t it;
  return bson_iter_init_find(&it, &doc, "speculativeAuthenticate");
}

std::optional<double> ok_value(wire::BsonView reply) noexcept {
  bson_t doc;
  if (!reply.init_static(&doc)) return std::nullopt;
  bson_iter_t it;
  if (!bson_iter_init_find(&it, &doc, "ok")) return std::nullopt;
  switch (bson_iter_type(&it)) {
    case BSON_TYPE_DOUBLE:
      return bson_iter_double(&it);
    case BSON_TYPE_INT32:
      return bson_iter_int32(&it);
    case BSON_TYPE_INT64:
      return static_cast<double>(bson_iter_int64(&it));
    case BSON_TYPE_BOOL:
      return bson_iter_bool(&it) ? 1.0 : 0.0;
    default:
      return std::nullopt;
  }
}

bool reply_succeeded(wire::BsonView reply) noexcept {
  auto ok = ok_value(reply);
  return ok && *ok == 1.0;
}

}  // namespace varanus::monitor
