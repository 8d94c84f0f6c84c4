// Helpers for the sinks tests: events built by hand, documents from JSON.
#pragma once

#include <bson/bson.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "varanus/monitor/event.hpp"

namespace sinks_test {

using namespace varanus;

/// BSON bytes from canonical/relaxed Extended JSON.
inline wire::BsonBytes bson(const std::string& json) {
  bson_error_t err;
  bson_t* b = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json.data()),
                                 static_cast<ssize_t>(json.size()), &err);
  REQUIRE_MESSAGE(b != nullptr, err.message);
  const std::uint8_t* p = bson_get_data(b);
  wire::BsonBytes out(p, p + b->len);
  bson_destroy(b);
  return out;
}

inline monitor::ConnectionInfoPtr connection(std::uint64_t id = 7, bool known = true) {
  auto c = std::make_shared<monitor::ConnectionInfo>();
  c->connectionId = id;
  c->client = "127.0.0.1:50312";
  c->server = "db.example.net:27017";
  if (known) {
    c->appName = "orders";
    c->driver = "PyMongo 4.6.1";
    c->serverConnectionId = 4242;
  }
  return c;
}

/// 2026-11-24T19:15:24.123456Z
inline std::chrono::system_clock::time_point fixed_time() {
  using namespace std::chrono;
  return sys_days{year{2026} / 11 / 24} + hours{19} + minutes{15} + seconds{24} +
         microseconds{123456};
}

inline monitor::Event started(
    std::int32_t requestId = 11,
    const std::string& cmd =
        R"({"find": "orders", "filter": {"qty": {"$gt": 5}}, "$db": "shop"})") {
  monitor::Event e;
  e.type = monitor::EventType::commandStarted;
  e.time = fixed_time();
  e.connection = connection();
  e.requestId = requestId;
  e.commandName = "find";
  e.databaseName = "shop";
  e.document = bson(cmd);
  return e;
}

inline monitor::Event succeeded(std::int32_t requestId = 11) {
  monitor::Event e;
  e.type = monitor::EventType::commandSucceeded;
  e.time = fixed_time();
  e.connection = connection();
  e.requestId = requestId;
  e.commandName = "find";
  e.databaseName = "shop";
  e.document = bson(R"({"cursor": {"firstBatch": [], "id": 0, "ns": "shop.orders"}, "ok": 1.0})");
  e.durationMicros = 1234;
  return e;
}

/// A temporary directory removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "varanus-sinks-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
};

}  // namespace sinks_test
