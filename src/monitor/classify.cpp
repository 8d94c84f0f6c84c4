#include "varanus/monitor/classify.hpp"

#include <array>
#include <cctype>

#include "varanus/wire/bson_walk.hpp"

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
  wire::BsonElement e;
  return wire::BsonWalk::find(body, "speculativeAuthenticate", e);
}

std::optional<double> ok_value(wire::BsonView reply) noexcept {
  wire::BsonElement e;
  if (!wire::BsonWalk::find(reply, "ok", e)) return std::nullopt;
  switch (e.type) {
    case wire::bson_type::kDouble:
    case wire::bson_type::kInt32:
    case wire::bson_type::kInt64:
      return e.as_number();
    case wire::bson_type::kBool:
      return e.as_bool() ? 1.0 : 0.0;
    default:
      return std::nullopt;
  }
}

bool reply_succeeded(wire::BsonView reply) noexcept {
  auto ok = ok_value(reply);
  return ok && *ok == 1.0;
}

}  // namespace varanus::monitor
