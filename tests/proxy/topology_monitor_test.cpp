// The topology monitor against the real varanus-stub (issue 21): a 3-member
// replica set in one stub process (--replset rs0 --members 3) and a
// standalone. Nothing but the monitor talks to the stub, except the tiny
// blocking client below that sends replSetStepDown / serverStatus.
#include "varanus/proxy/topology_monitor.hpp"

#include <arpa/inet.h>
#include <bson/bson.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../support/certs.hpp"
#include "varanus/wire/builder.hpp"

#ifndef VARANUS_STUB
#error "VARANUS_STUB is the varanus-stub executable (tests/proxy/CMakeLists.txt)"
#endif

extern char** environ;

using namespace std::chrono_literals;
using nlohmann::json;
using varanus::proxy::Endpoint;
using varanus::proxy::TopologyMonitor;
using varanus::proxy::TopologyMonitorConfig;
namespace sdam = varanus::monitor::sdam;
using Clock = std::chrono::steady_clock;

namespace {

json to_json(const std::uint8_t* data, std::size_t size) {
  bson_t b;
  REQUIRE(bson_init_static(&b, data, size));
  char* text = bson_as_relaxed_extended_json(&b, nullptr);
  REQUIRE(text != nullptr);
  json j = json::parse(text);
  bson_free(text);
  return j;
}

/// varanus-stub as a child process; its first stdout lines are its addresses.
struct Stub {
  pid_t pid = -1;
  std::vector<std::string> addresses;

  explicit Stub(std::vector<std::string> args, std::size_t lines) {
    int o[2];
    REQUIRE(::pipe2(o, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    // Not the test's stderr: a stub outliving a crashed test must not hold
    // a pipe that ctest (or a shell) waits on.
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    args.insert(args.begin(), VARANUS_STUB);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(::posix_spawn(&pid, VARANUS_STUB, &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(o[1]);
    std::string text;
    const auto deadline = Clock::now() + 10s;
    while (static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) < lines &&
           Clock::now() < deadline) {
      pollfd p{o[0], POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[512];
      const ssize_t n = ::read(o[0], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(o[0]);
    std::size_t start = 0;
    for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
      addresses.push_back(text.substr(start, nl - start));
    REQUIRE_MESSAGE(addresses.size() == lines, "stub printed: " << text);
  }
  ~Stub() {
    ::kill(pid, SIGCONT);
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  }
  Stub(const Stub&) = delete;
  Stub& operator=(const Stub&) = delete;
};

/// One command over a fresh blocking connection: the reply's body.
json command(const std::string& address, const char* extendedJson) {
  const auto ep = Endpoint::parse(address);
  REQUIRE(ep);
  bson_error_t err;
  bson_t* cmd = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(extendedJson), -1, &err);
  REQUIRE_MESSAGE(cmd != nullptr, err.message);
  const auto frame = varanus::wire::build_op_msg(7, 0, 0, varanus::wire::BsonView::of(cmd));
  bson_destroy(cmd);

  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(ep->port);
  REQUIRE(::inet_pton(AF_INET, ep->host.c_str(), &a.sin_addr) == 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(frame.size()));
  std::vector<std::uint8_t> in;
  std::uint32_t length = 0;
  while (length == 0 || in.size() < length) {
    std::uint8_t buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    REQUIRE_MESSAGE(n > 0, "no reply from " << address);
    in.insert(in.end(), buf, buf + n);
    if (length == 0 && in.size() >= 4) std::memcpy(&length, in.data(), 4);
  }
  ::close(fd);
  auto msg = varanus::wire::decode(in);
  REQUIRE(msg);
  const auto* op = std::get_if<varanus::wire::OpMsg>(&msg.value().body);
  REQUIRE(op != nullptr);
  return to_json(op->body.data, op->body.size);
}

/// Everything the monitor reported, in order: events ("serverOpening", ...)
/// and the server callbacks ("+opened", "+closed"), with the time seen.
struct Recorder {
  struct Entry {
    std::string name;
    json fields;  // for the callbacks: {"address": ...}
    Clock::time_point at;
  };
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<Entry> entries;
  sdam::ViaMap viaMap;  // "via-<address>" for each opened server

  void attach(TopologyMonitor& m) {
    m.on_event([this](const sdam::TopologyEvent& ev) {
      add(ev.name, to_json(ev.fields.data(), ev.fields.size()));
    });
    m.on_server_opened([this](const std::string& address) {
      {
        std::lock_guard lock(mu);
        viaMap[address] = "via-" + address;
      }
      add("+opened", json{{"address", address}});
    });
    m.on_server_closed([this](const std::string& address) {
      add("+closed", json{{"address", address}});
    });
    m.via([this] {
      std::lock_guard lock(mu);
      return viaMap;
    });
  }
  void add(std::string name, json fields) {
    if (std::getenv("VARANUS_TEST_VERBOSE"))  // the events, for debugging a failure
      std::fprintf(stderr, "%s %s\n", name.c_str(), fields.dump().c_str());
    {
      std::lock_guard lock(mu);
      entries.push_back({std::move(name), std::move(fields), Clock::now()});
    }
    cv.notify_all();
  }
  std::vector<Entry> snapshot() const {
    std::lock_guard lock(mu);
    return entries;
  }
  std::size_t size() const {
    std::lock_guard lock(mu);
    return entries.size();
  }
  /// Waits until pred(entries) holds; false at the deadline.
  bool wait(const std::function<bool(const std::vector<Entry>&)>& pred,
            std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return pred(entries); });
  }
};

/// Polls the monitor's description until pred holds; false at the deadline.
bool wait_description(const TopologyMonitor& m,
                      const std::function<bool(const sdam::TopologyDescription&)>& pred,
                      std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred(m.description())) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred(m.description());
}

bool all_known(const sdam::TopologyDescription& td, std::size_t n) {
  if (td.servers.size() != n) return false;
  return std::all_of(td.servers.begin(), td.servers.end(),
                     [](const auto& kv) { return kv.second.type != sdam::ServerType::Unknown; });
}

std::optional<std::string> primary_in(const json& topologyDoc) {
  for (const auto& s : topologyDoc["servers"])
    if (s["type"] == "RSPrimary") return s["address"].get<std::string>();
  return std::nullopt;
}

std::size_t count_after(const std::vector<Recorder::Entry>& es, std::size_t from,
                        const std::string& name, const std::string& address = "") {
  std::size_t n = 0;
  for (std::size_t i = from; i < es.size(); ++i)
    if (es[i].name == name && (address.empty() || es[i].fields.value("address", "") == address))
      ++n;
  return n;
}

TopologyMonitorConfig rs_config(const Stub& stub) {
  TopologyMonitorConfig cfg;
  cfg.seeds = {*Endpoint::parse(stub.addresses[0])};
  cfg.setName = "rs0";
  cfg.heartbeatFrequency = 500ms;
  cfg.connectTimeout = 1000ms;
  return cfg;
}

/// A 3-member set, the monitor seeded with the first member, discovered.
struct RsFixture {
  Stub stub{{"--replset", "rs0", "--members", "3", "--listen", "127.0.0.1:0"}, 3};
  Recorder rec;
  TopologyMonitor monitor{rs_config(stub)};

  RsFixture() {
    rec.attach(monitor);
    monitor.start();
    REQUIRE_MESSAGE(wait_description(
                        monitor,
                        [](const sdam::TopologyDescription& td) {
                          return td.type == sdam::TopologyType::ReplicaSetWithPrimary &&
                                 all_known(td, 3);
                        },
                        10s),
                    "not discovered; events: " << rec.size());
  }
};

}  // namespace

TEST_CASE("config errors name the cause") {
  TopologyMonitorConfig cfg;
  CHECK_THROWS_WITH_AS(TopologyMonitor{cfg}, doctest::Contains("no seed"), std::invalid_argument);
  cfg.seeds = {{"127.0.0.1", 27017}};
  cfg.heartbeatFrequency = 100ms;
  CHECK_THROWS_WITH_AS(TopologyMonitor{cfg}, doctest::Contains("under the minimum of 500 ms"),
                       std::invalid_argument);
  cfg.heartbeatFrequency = 500ms;
  cfg.seeds.push_back({"127.0.0.1", 27018});
  cfg.directConnection = true;
  CHECK_THROWS_WITH_AS(TopologyMonitor{cfg}, doctest::Contains("directConnection"),
                       std::invalid_argument);
}

TEST_CASE("a replica set: all three discovered, the primary, events in the spec's order") {
  RsFixture f;
  const auto td = f.monitor.description();
  CHECK(td.setName == "rs0");
  CHECK(td.primary() == f.stub.addresses[0]);
  for (const auto& a : f.stub.addresses) REQUIRE(td.servers.count(a) == 1);
  CHECK(td.servers.at(f.stub.addresses[1]).type == sdam::ServerType::RSSecondary);

  const auto es = f.rec.snapshot();
  REQUIRE(es.size() >= 3);
  CHECK(es[0].name == "+opened");  // the seed's listener before any event
  CHECK(es[1].name == "topologyOpening");
  CHECK(es[2].name == "topologyDescriptionChanged");
  CHECK(count_after(es, 0, "topologyOpening") == 1);
  CHECK(count_after(es, 0, "serverOpening") == 3);

  for (std::size_t k = 0; k < 3; ++k) {
    const std::string& a = f.stub.addresses[k];
    auto find = [&](const std::function<bool(const Recorder::Entry&)>& p) {
      return std::find_if(es.begin(), es.end(), p) - es.begin();
    };
    const auto opened =
        find([&](const auto& e) { return e.name == "+opened" && e.fields["address"] == a; });
    const auto opening =
        find([&](const auto& e) { return e.name == "serverOpening" && e.fields["address"] == a; });
    REQUIRE(static_cast<std::size_t>(opening) < es.size());
    CHECK(opened < opening);  // the callback first, so `via` names the listener
    CHECK(es[opening].fields["via"] == "via-" + a);
    if (k == 0) continue;
    // A discovered member is opened only once the seed's description names it.
    const auto named = find([&](const auto& e) {
      if (e.name != "serverDescriptionChanged" || e.fields["address"] != f.stub.addresses[0])
        return false;
      const auto& hosts = e.fields["newDescription"]["hosts"];
      return std::find(hosts.begin(), hosts.end(), a) != hosts.end();
    });
    REQUIRE(static_cast<std::size_t>(named) < es.size());
    CHECK(named < opening);
  }
  // Heartbeats: started, then succeeded, with the member's address.
  CHECK(count_after(es, 0, "serverHeartbeatStarted", f.stub.addresses[1]) >= 1);
  CHECK(count_after(es, 0, "serverHeartbeatSucceeded", f.stub.addresses[1]) >= 1);
}

TEST_CASE("streaming hellos on a quiet set: RTT measured, no description change") {
  RsFixture f;
  const std::size_t mark = f.rec.size();
  // Three awaited replies per member (one per maxAwaitTimeMS = 500 ms).
  REQUIRE(f.rec.wait(
      [&](const auto& es) {
        for (const auto& a : f.stub.addresses) {
          std::size_t n = 0;
          for (std::size_t i = mark; i < es.size(); ++i)
            if (es[i].name == "serverHeartbeatSucceeded" && es[i].fields["address"] == a &&
                es[i].fields["awaited"] == true)
              ++n;
          if (n < 3) return false;
        }
        return true;
      },
      10s));
  const auto es = f.rec.snapshot();
  CHECK(count_after(es, mark, "serverDescriptionChanged") == 0);
  CHECK(count_after(es, mark, "topologyDescriptionChanged") == 0);

  const json status = command(f.stub.addresses[0], R"({"serverStatus": 1, "$db": "admin"})");
  CHECK(status["varanusStub"]["awaitedHelloOut"].get<std::int64_t>() > 0);

  // The RTT connection keeps roundTripTime current while the checks stream.
  REQUIRE(wait_description(
      f.monitor,
      [](const sdam::TopologyDescription& td) {
        return std::all_of(td.servers.begin(), td.servers.end(),
                           [](const auto& kv) { return kv.second.roundTripTime.has_value(); });
      },
      5s));
}

TEST_CASE("a step-down is seen while no application talks: both members, one new primary") {
  RsFixture f;
  const std::string oldPrimary = f.stub.addresses[0];
  const std::string newPrimary = f.stub.addresses[1];
  const std::size_t mark = f.rec.size();
  const json r = command(oldPrimary, R"({"replSetStepDown": 1, "$db": "admin"})");
  REQUIRE(r["ok"] == 1.0);
  const auto t0 = Clock::now();

  auto names_new_primary = [&](const Recorder::Entry& e) {
    return e.name == "topologyDescriptionChanged" &&
           primary_in(e.fields["newDescription"]) == newPrimary &&
           primary_in(e.fields["previousDescription"]) != newPrimary;
  };
  REQUIRE(f.rec.wait(
      [&](const auto& es) {
        return std::any_of(es.begin() + static_cast<std::ptrdiff_t>(mark), es.end(),
                           names_new_primary);
      },
      5s));
  // Streaming: well within one heartbeat plus the read, not a full poll cycle.
  CHECK(Clock::now() - t0 < 3s);
  REQUIRE(wait_description(
      f.monitor,
      [&](const sdam::TopologyDescription& td) {
        return td.primary() == newPrimary && all_known(td, 3) &&
               td.servers.at(oldPrimary).type == sdam::ServerType::RSSecondary;
      },
      5s));
  // Let a few more streamed replies arrive: nothing else names a new primary.
  const std::size_t settled = f.rec.size();
  REQUIRE(f.rec.wait(
      [&](const auto& es) { return count_after(es, settled, "serverHeartbeatSucceeded") >= 6; },
      10s));

  const auto es = f.rec.snapshot();
  const auto tdc =
      std::find_if(es.begin() + static_cast<std::ptrdiff_t>(mark), es.end(), names_new_primary);
  CHECK(std::count_if(es.begin() + static_cast<std::ptrdiff_t>(mark), es.end(),
                      names_new_primary) == 1);
  // serverDescriptionChanged for both members, the new primary's before the
  // topologyDescriptionChanged that names it.
  bool newSeen = false;
  for (auto it = es.begin() + static_cast<std::ptrdiff_t>(mark); it != tdc; ++it)
    if (it->name == "serverDescriptionChanged" && it->fields["address"] == newPrimary &&
        it->fields["newDescription"]["type"] == "RSPrimary")
      newSeen = true;
  CHECK(newSeen);
  bool oldChanged = false;
  for (auto it = es.begin() + static_cast<std::ptrdiff_t>(mark); it != es.end(); ++it)
    if (it->name == "serverDescriptionChanged" && it->fields["address"] == oldPrimary &&
        it->fields["previousDescription"]["type"] == "RSPrimary")
      oldChanged = true;
  CHECK(oldChanged);
}

TEST_CASE("SIGSTOP: heartbeat failures and Unknown with the error, SIGCONT: known again") {
  RsFixture f;
  const std::size_t mark = f.rec.size();
  REQUIRE(::kill(f.stub.pid, SIGSTOP) == 0);
  const auto stopped = Clock::now();
  const bool down = wait_description(
      f.monitor,
      [](const sdam::TopologyDescription& td) {
        return std::all_of(td.servers.begin(), td.servers.end(), [](const auto& kv) {
          return kv.second.type == sdam::ServerType::Unknown && kv.second.error.has_value();
        });
      },
      10s);
  const auto downAfter = Clock::now() - stopped;
  // Still stopped: the one immediate retry (a new connection, a plain
  // hello: connectTimeout), then a check every heartbeatFrequency.
  const bool retried = f.rec.wait(
      [&](const auto& es) {
        for (const auto& a : f.stub.addresses)
          if (count_after(es, mark, "serverHeartbeatFailed", a) < 2) return false;
        return true;
      },
      10s);
  ::kill(f.stub.pid, SIGCONT);
  REQUIRE(down);
  REQUIRE(retried);
  // Not before a read timed out: connectTimeout (1 s) at the least.
  CHECK(downAfter >= 900ms);

  auto es = f.rec.snapshot();
  for (const auto& a : f.stub.addresses) {
    CHECK(count_after(es, mark, "serverHeartbeatFailed", a) >= 1);
    bool unknown = false;
    for (std::size_t i = mark; i < es.size(); ++i)
      if (es[i].name == "serverDescriptionChanged" && es[i].fields["address"] == a &&
          es[i].fields["newDescription"]["type"] == "Unknown") {
        unknown = true;
        CHECK(es[i].fields["newDescription"]["error"].get<std::string>().find("timed out") !=
              std::string::npos);
      }
    CHECK(unknown);
  }
  for (std::size_t i = mark; i < es.size(); ++i)
    if (es[i].name == "serverHeartbeatFailed") CHECK(es[i].at - stopped >= 900ms);
  for (const auto& a : f.stub.addresses) {
    std::vector<json> failures;
    for (std::size_t i = mark; i < es.size(); ++i)
      if (es[i].name == "serverHeartbeatFailed" && es[i].fields["address"] == a)
        failures.push_back(es[i].fields);
    REQUIRE(failures.size() >= 2);
    // The streamed read waited connectTimeout + heartbeatFrequency; the
    // retry's plain hello connectTimeout.
    CHECK(failures[0]["awaited"] == true);
    CHECK(failures[0]["failure"] == "no reply within 1500 ms (timed out)");
    CHECK(failures[1]["awaited"] == false);
    CHECK(failures[1]["failure"] == "no reply within 1000 ms (timed out)");
  }

  REQUIRE(wait_description(
      f.monitor,
      [&](const sdam::TopologyDescription& td) {
        return td.type == sdam::TopologyType::ReplicaSetWithPrimary && all_known(td, 3) &&
               td.primary() == f.stub.addresses[0];
      },
      10s));
}

TEST_CASE("stop(): serverClosed for each member, then topologyClosed, idempotent") {
  RsFixture f;
  f.monitor.stop();
  const auto es = f.rec.snapshot();
  REQUIRE(es.size() >= 4);
  std::set<std::string> closed;
  for (std::size_t i = es.size() - 4; i < es.size() - 1; ++i) {
    CHECK(es[i].name == "serverClosed");
    closed.insert(es[i].fields["address"].get<std::string>());
  }
  CHECK(closed == std::set<std::string>(f.stub.addresses.begin(), f.stub.addresses.end()));
  CHECK(es.back().name == "topologyClosed");
  CHECK(count_after(es, 0, "serverClosed") == 3);
  CHECK(count_after(es, 0, "+closed") == 0);
  f.monitor.stop();
  CHECK(f.rec.size() == es.size());
}

TEST_CASE("a standalone seed without a set name: topology Single") {
  Stub stub({"--listen", "127.0.0.1:0"}, 1);
  Recorder rec;
  TopologyMonitorConfig cfg;
  cfg.seeds = {*Endpoint::parse(stub.addresses[0])};
  cfg.heartbeatFrequency = 500ms;
  cfg.connectTimeout = 1000ms;
  TopologyMonitor monitor(cfg);
  rec.attach(monitor);
  monitor.start();
  REQUIRE(wait_description(
      monitor,
      [](const sdam::TopologyDescription& td) { return td.type == sdam::TopologyType::Single; },
      10s));
  const auto td = monitor.description();
  REQUIRE(td.servers.size() == 1);
  CHECK(td.servers.begin()->second.type == sdam::ServerType::Standalone);
}

TEST_CASE("streaming off: a plain hello every heartbeat, no awaited hello") {
  Stub stub({"--replset", "rs0", "--members", "3", "--listen", "127.0.0.1:0"}, 3);
  Recorder rec;
  TopologyMonitorConfig cfg = rs_config(stub);
  cfg.streaming = false;
  TopologyMonitor monitor(cfg);
  rec.attach(monitor);
  monitor.start();
  REQUIRE(wait_description(
      monitor,
      [](const sdam::TopologyDescription& td) {
        return td.type == sdam::TopologyType::ReplicaSetWithPrimary && all_known(td, 3);
      },
      10s));
  const std::size_t mark = rec.size();
  REQUIRE(rec.wait(
      [&](const auto& es) {
        return count_after(es, mark, "serverHeartbeatSucceeded", stub.addresses[2]) >= 2;
      },
      10s));
  const auto es = rec.snapshot();
  for (std::size_t i = mark; i < es.size(); ++i)
    if (es[i].name == "serverHeartbeatSucceeded") CHECK(es[i].fields["awaited"] == false);
  CHECK(count_after(es, mark, "serverDescriptionChanged") == 0);
  const json status = command(stub.addresses[0], R"({"serverStatus": 1, "$db": "admin"})");
  CHECK(status["varanusStub"]["awaitedHelloOut"].get<std::int64_t>() == 0);
}

TEST_CASE("TLS: a set over TLS with its CA, an untrusted one is Unknown naming the cause") {
  namespace vt = varanus::test;
  Stub stub({"--replset", "rs0", "--members", "3", "--listen", "127.0.0.1:0", "--tls-cert",
             vt::cert("server.pem"), "--tls-key", vt::cert("server.key")},
            3);
  varanus::proxy::TlsClientSettings trusted;
  trusted.enabled = true;
  trusted.caFile = vt::cert("ca.pem");
  TopologyMonitorConfig cfg = rs_config(stub);
  cfg.tls = varanus::proxy::TlsContext::client(trusted);
  {
    Recorder rec;
    TopologyMonitor monitor(cfg);
    rec.attach(monitor);
    monitor.start();
    REQUIRE(wait_description(
        monitor,
        [](const sdam::TopologyDescription& td) {
          return td.type == sdam::TopologyType::ReplicaSetWithPrimary && all_known(td, 3);
        },
        10s));
    CHECK(monitor.description().primary() == stub.addresses[0]);
  }
  varanus::proxy::TlsClientSettings untrusted = trusted;
  untrusted.caFile = vt::cert("unknown-ca.pem");
  cfg.tls = varanus::proxy::TlsContext::client(untrusted);
  Recorder rec;
  TopologyMonitor monitor(cfg);
  rec.attach(monitor);
  monitor.start();
  REQUIRE(rec.wait(
      [](const auto& es) {
        return std::any_of(es.begin(), es.end(),
                           [](const auto& e) { return e.name == "serverHeartbeatFailed"; });
      },
      10s));
  const auto es = rec.snapshot();
  const auto failed = std::find_if(es.begin(), es.end(),
                                   [](const auto& e) { return e.name == "serverHeartbeatFailed"; });
  const std::string failure = failed->fields["failure"];
  CHECK_MESSAGE(failure.find("TLS handshake with " + stub.addresses[0] + " failed") == 0, failure);
  CHECK_MESSAGE(failure.find("certificate verify failed") != std::string::npos, failure);
  const auto td = monitor.description();
  CHECK(td.type == sdam::TopologyType::ReplicaSetNoPrimary);
  CHECK(td.servers.size() == 1);
}
