// varanus app — reading the config file's JSON, one key at a time, for
// config.cpp (the top-level keys) and sink_config.cpp (the "sinks"
// section). Every key has one type; a value of another type, or out of
// range, throws `Error` naming the key by its JSON pointer:
// "config: /upstream/port: expected integer from 0 to 65535".
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace varanus::app {

/// The JSON pointer of `key` inside the object at `path` (RFC 6901: "~"
/// and "/" in the key escaped, by nlohmann::json_pointer).
std::string json_child(const std::string& path, const std::string& key);
/// The JSON pointer of element `index` of the array at `path`.
std::string json_child(const std::string& path, std::size_t index);

/// "_comment", "_comment_port", ...: documentation inside the file.
inline bool is_comment_key(std::string_view key) noexcept {
  return key.starts_with("_comment");
}

/// The checks, throwing `Error` (ConfigError, SinkConfigError).
template <class Error>
struct JsonFields {
  using json = nlohmann::json;

  [[noreturn]] static void fail(const std::string& path, const std::string& what) {
    throw Error("config: " + (path.empty() ? std::string("/") : path) + ": " + what);
  }

  static const json::object_t& object(const json& v, const std::string& path) {
    if (!v.is_object()) fail(path, "expected object");
    return v.get_ref<const json::object_t&>();
  }

  static std::int64_t integer(const json& v, const std::string& path, std::int64_t min,
                              std::int64_t max) {
    if (!v.is_number_integer()) fail(path, "expected integer");
    std::int64_t n = 0;
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(path, "out of range");
      n = static_cast<std::int64_t>(u);
    } else {
      n = v.get<std::int64_t>();
    }
    if (n < min || n > max)
      fail(path, "expected integer from " + std::to_string(min) + " to " + std::to_string(max));
    return n;
  }

  static std::string string(const json& v, const std::string& path) {
    if (!v.is_string()) fail(path, "expected string");
    return v.get<std::string>();
  }

  static bool boolean(const json& v, const std::string& path) {
    if (!v.is_boolean()) fail(path, "expected boolean");
    return v.get<bool>();
  }
};

}  // namespace varanus::app
