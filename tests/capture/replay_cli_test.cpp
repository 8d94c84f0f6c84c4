// The real `varanus` binary: replay's event lines, sinks, --summary (table
// and JSON), usage and errors; sniff's errors (no such interface, no
// CAP_NET_RAW). Live sniffing of a workload is tests/integration/test_capture.py.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

using json = nlohmann::json;

namespace {

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string temp(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("varanus-replay-cli-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

/// Runs `varanus ARGS` through the shell (ARGS quoted by the caller).
Run varanus(const std::string& args, const std::string& prefix = "") {
  const std::string out = temp("out"), err = temp("err");
  const std::string cmd =
      prefix + std::string(VARANUS_BINARY) + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int rc = std::system(cmd.c_str());
  Run r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

std::string pcap(const std::string& name) {
  return std::string(VARANUS_TESTDATA_DIR) + "/pcap/" + name;
}

std::vector<json> lines(const std::string& text) {
  std::vector<json> v;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty() && l[0] == '{') v.push_back(json::parse(l));
  return v;
}

std::size_t count(const std::vector<json>& events, const std::string& type,
                  const std::string& name = "") {
  std::size_t n = 0;
  for (const auto& e : events)
    if (e["event"] == type && (name.empty() || e.value("commandName", "") == name)) ++n;
  return n;
}

}  // namespace

TEST_CASE("replay prints the proxy's event lines with capture times, totals on stderr") {
  const Run r =
      varanus("replay --port 27017 --port 27018 " + pcap("mongodb_insert_duplicate_key.pcap"));
  REQUIRE_MESSAGE(r.status == 0, r.err);
  const auto ev = lines(r.out);
  CHECK(count(ev, "commandStarted", "insert") == 2);
  CHECK(count(ev, "commandSucceeded", "insert") == 2);
  CHECK(count(ev, "commandFailed", "replSetGetStatus") == 1);
  CHECK(count(ev, "connectionClosed") == 2);
  REQUIRE(!ev.empty());
  CHECK(ev.front()["t"] == "2015-07-23T14:06:20.019866Z");
  CHECK(ev.front()["server"] == "127.0.0.1:27018");
  CHECK(r.err.find("capture starts mid-stream") != std::string::npos);
  CHECK(r.err.find("9 packets") != std::string::npos);
}

TEST_CASE("replay: only the given ports, --quiet and --max-document-length apply") {
  const Run r = varanus("replay --quiet --max-document-length 20 --port 27018 " +
                        pcap("mongodb_insert_duplicate_key.pcap"));
  REQUIRE(r.status == 0);
  CHECK(r.err.empty());
  const auto ev = lines(r.out);
  CHECK(count(ev, "connectionOpened") == 1);  // the mongos connection only
  CHECK(count(ev, "commandStarted", "insert") == 1);
  CHECK(r.out.find("\"insert\":\"restaurants\",\"documents\":[{\"_id\":{\"$oid\"") ==
        std::string::npos);  // cut at 20 characters
}

TEST_CASE("replay --config: the config file's sinks and format") {
  const std::string cfg = temp("cfg.json"), log = temp("events.log");
  std::ofstream(cfg) << R"({"sinks": {"outputs": [{"type": "file", "path": ")" << log
                     << R"(", "format": "mongodb-log"}]}})";
  const Run r = varanus("replay --config " + cfg + " " + pcap("mongodb_more_rows.pcap"));
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.out.empty());
  const std::string events = slurp(log);
  CHECK(events.find("\"find\"") != std::string::npos);
  CHECK(events.find("\"message\":\"Command started\"") != std::string::npos);  // mongodb-log
  std::filesystem::remove(cfg);
  std::filesystem::remove(log);
}

TEST_CASE("replay --summary: tables per command and namespace, slowest, errors by code") {
  const Run r =
      varanus("replay --quiet --summary --port 27017 --port 27018 " +
              pcap("mongodb_insert_duplicate_key.pcap") + " " + pcap("mongo_3.0_session.pcap"));
  REQUIRE(r.status == 0);
  CHECK(r.out.find("\"event\"") == std::string::npos);  // no event lines: the summary alone
  CHECK(r.out.find("command ") == 0);
  CHECK(r.out.find("test.restaurants ") != std::string::npos);
  CHECK(r.out.find("slowest commands:") != std::string::npos);
  CHECK(r.out.find("2  11000 (writeError)") != std::string::npos);

  const Run j =
      varanus("replay --quiet --summary --json --port 27017 --port 27018 " +
              pcap("mongodb_insert_duplicate_key.pcap") + " " + pcap("mongo_3.0_session.pcap"));
  REQUIRE(j.status == 0);
  const json s = json::parse(j.out);
  std::map<std::string, json> byName;
  for (const auto& row : s["commands"]) byName[row["name"]] = row;
  CHECK(byName.at("insert")["count"] == 4);
  CHECK(byName.at("insert")["failures"] == 0);
  CHECK(byName.at("isMaster")["count"] == 11);
  CHECK(byName.at("replSetGetStatus")["failures"] == 1);
  CHECK(byName.at("insert")["maxMicros"] >= byName.at("insert")["p50Micros"]);
  CHECK(byName.at("insert")["bytes"] > 0);
  REQUIRE(s["slowest"].size() == 10);
  CHECK(s["slowest"][0]["durationMicros"] >= s["slowest"][9]["durationMicros"]);
  CHECK(s["slowest"][0]["command"].get<std::string>().find("restaurants") != std::string::npos);
  CHECK(s["errors"]["11000 (writeError)"] == 2);
  CHECK(s["errors"]["no code: replSetGetStatus is not supported through mongos"] == 1);
  bool ns = false;
  for (const auto& row : s["namespaces"]) ns |= row["name"] == "test.restaurants";
  CHECK(ns);
}

TEST_CASE("replay: usage, help and unreadable files") {
  CHECK(varanus("replay").status == 2);
  CHECK(varanus("replay --port 0 x.pcap").status == 2);
  CHECK(varanus("replay --bogus x.pcap").status == 2);
  const Run help = varanus("replay --help");
  CHECK(help.status == 0);
  CHECK(help.out.find("--summary") != std::string::npos);
  const Run top = varanus("--help");
  CHECK(top.out.find("varanus replay FILE") != std::string::npos);
  CHECK(top.out.find("varanus sniff -i IFACE") != std::string::npos);
  const Run missing = varanus("replay /nonexistent/capture.pcap " + pcap("mongo_one_row.pcap"));
  CHECK(missing.status == 1);
  CHECK(missing.err.find("/nonexistent/capture.pcap") != std::string::npos);
  CHECK(count(lines(missing.out), "commandStarted", "find") == 1);  // the other file still replays
}

TEST_CASE("sniff: usage and a clear error for a missing interface") {
  CHECK(varanus("sniff").status == 2);
  const Run r = varanus("sniff -i varanus-no-such-if0");
  CHECK(r.status == 1);
  CHECK(r.err.find("varanus-no-such-if0") != std::string::npos);
  const Run help = varanus("sniff --help");
  CHECK(help.status == 0);
  CHECK(help.out.find("CAP_NET_RAW") != std::string::npos);
}

TEST_CASE("sniff without CAP_NET_RAW fails and says what is missing") {
  // As an unprivileged user with no capabilities (the tests run as root).
  REQUIRE_MESSAGE(::access("/usr/bin/setpriv", X_OK) == 0, "setpriv (util-linux) is needed");
  const Run r = varanus("sniff -i lo",
                        "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups "
                        "--inh-caps=-all --bounding-set=-all ");
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("CAP_NET_RAW") != std::string::npos, r.err);
}
