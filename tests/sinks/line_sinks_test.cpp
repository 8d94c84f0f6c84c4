// Line sinks: files (append, batching, rotation, reopen) and descriptors.
#include "varanus/sinks/line_sinks.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sink_test_util.hpp"

using namespace varanus;
using namespace sinks_test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> read_lines(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

}  // namespace

TEST_CASE("a file sink appends JSON lines and writes them on flush") {
  TempDir dir;
  const fs::path p = dir.path / "varanus.log";
  { std::ofstream(p) << "existing line\n"; }
  sinks::FileSink sink({p.string()});
  CHECK(sink.name() == "file:" + p.string());
  for (int i = 0; i < 10; ++i) sink.write(started(i));
  CHECK(read_lines(p).size() == 1);  // buffered: one write(2) per batch
  sink.flush();
  auto lines = read_lines(p);
  REQUIRE(lines.size() == 11);
  CHECK(lines[0] == "existing line");
  CHECK(json::parse(lines[10])["requestId"] == 9);
  sink.write(started(10));
  sink.close();
  CHECK(read_lines(p).size() == 12);  // close() flushes
  sink.write(started(11));            // ignored after close
  CHECK(sink.written() == 11);
}

TEST_CASE("a file that cannot be opened is a clear error") {
  CHECK_THROWS_WITH_AS(sinks::FileSink({"/nonexistent-dir/x.log"}),
                       doctest::Contains("/nonexistent-dir/x.log"), std::system_error);
}

TEST_CASE("size rotation keeps N files and never splits a line") {
  TempDir dir;
  const fs::path p = dir.path / "events.log";
  sinks::FileSinkOptions o{p.string(), 2000, 2};
  sinks::FileSink sink(o);
  int written = 0;
  for (int batch = 0; batch < 20; ++batch) {
    for (int i = 0; i < 7; ++i) sink.write(started(written++));
    sink.flush();
  }
  sink.close();
  CHECK(fs::exists(p));
  CHECK(fs::exists(dir.path / "events.log.1"));
  CHECK(fs::exists(dir.path / "events.log.2"));
  CHECK(!fs::exists(dir.path / "events.log.3"));
  std::vector<int> ids;
  for (const char* name : {"events.log.2", "events.log.1", "events.log"}) {
    CHECK(fs::file_size(dir.path / name) <= 2000);
    for (const auto& l : read_lines(dir.path / name)) ids.push_back(json::parse(l)["requestId"]);
  }
  // The newest lines survive, in order, with no gaps.
  REQUIRE(!ids.empty());
  CHECK(ids.back() == written - 1);
  for (std::size_t i = 1; i < ids.size(); ++i) CHECK(ids[i] == ids[i - 1] + 1);
}

TEST_CASE("reopen() after a move starts a new file (logrotate)") {
  TempDir dir;
  const fs::path p = dir.path / "events.log";
  sinks::FileSink sink({p.string()});
  sink.write(started(1));
  sink.flush();
  fs::rename(p, dir.path / "events.log.old");
  sink.write(started(2));  // buffered, belongs to the old file
  sink.reopen();
  sink.write(started(3));
  sink.close();
  const auto old = read_lines(dir.path / "events.log.old");
  const auto now = read_lines(p);
  REQUIRE(old.size() == 2);
  REQUIRE(now.size() == 1);
  CHECK(json::parse(now[0])["requestId"] == 3);
}

TEST_CASE("a stream sink writes lines to its descriptor, a failed write is counted") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  sinks::StreamSink sink(fds[1], "pipe");
  sink.write(started(1));
  sink.write(succeeded(1));
  sink.flush();
  char buf[4096];
  const ssize_t n = ::read(fds[0], buf, sizeof buf);
  REQUIRE(n > 0);
  std::string text(buf, static_cast<std::size_t>(n));
  CHECK(std::count(text.begin(), text.end(), '\n') == 2);
  CHECK(json::parse(text.substr(0, text.find('\n')))["event"] == "commandStarted");
  ::close(fds[0]);
  ::close(fds[1]);

  std::vector<std::string> errors;
  sinks::StreamSink broken(fds[1], "closed-fd");
  broken.set_error_handler([&](std::string_view l) { errors.emplace_back(l); });
  broken.write(started(1));
  broken.flush();
  CHECK(broken.errors() == 1);
  CHECK(broken.dropped() == 1);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("closed-fd") != std::string::npos);
}
