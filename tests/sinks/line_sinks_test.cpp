// Line sinks: files (append, batching, rotation, reopen) and descriptors.
#include "varanus/sinks/line_sinks.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "sink_test_util.hpp"
#include "varanus/sinks/dispatcher.hpp"
#include "varanus/sinks/metrics.hpp"

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

TEST_CASE("a stdout pipe nobody reads starves no other sink: metrics count every command") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.closeTimeout = std::chrono::milliseconds(200);
  std::vector<std::string> diags;
  std::mutex diagMutex;
  o.diagnostics = [&](std::string_view l) {
    std::lock_guard lock(diagMutex);
    diags.emplace_back(l);
  };
  sinks::Dispatcher d(stats, o);
  auto stream = std::make_shared<sinks::StreamSink>(fds[1], "stdout");
  auto metrics = std::make_shared<sinks::MetricsSink>();
  d.add(stream);
  d.add(metrics);
  d.start();
  // Far more lines than the pipe (64 KiB) and the sink's pending bound hold.
  constexpr int kCommands = 30000;
  for (int i = 0; i < kCommands; ++i) {
    monitor::Event e = succeeded(i);
    e.commandName = "find";
    e.databaseName = "shop";
    d.publish(std::move(e));
  }
  // Every command counted, while the stream sink's reader reads nothing.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (metrics->commands("find", "shop", "succeeded") < kCommands &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(metrics->commands("find", "shop", "succeeded") == kCommands);
  CHECK(d.dropped() == 0);         // the ring never filled
  CHECK(metrics->dropped() == 0);  // the metrics lost nothing
  CHECK(stream->dropped() > 0);    // the stream sink lost its own events
  const auto t0 = std::chrono::steady_clock::now();
  d.stop();  // the close deadline bounds the stream sink's final flush
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  CHECK(stream->written() + stream->dropped() == kCommands);
  // What the pipe holds is exactly what the sink counts as written.
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  std::string text;
  char buf[65536];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<std::size_t>(n));
  CHECK(static_cast<std::uint64_t>(std::count(text.begin(), text.end(), '\n')) ==
        stream->written());
  {
    std::lock_guard lock(diagMutex);
    CHECK(std::any_of(diags.begin(), diags.end(), [](const std::string& l) {
      return l.find("stdout") != std::string::npos &&
             l.find("not written by the close deadline") != std::string::npos;
    }));
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("/dev/full: written counts no dropped event") {
  sinks::FileSink sink({"/dev/full"});
  std::vector<std::string> errors;
  sink.set_error_handler([&](std::string_view l) { errors.emplace_back(l); });
  for (int i = 0; i < 10; ++i) sink.write(succeeded(i));
  sink.flush();
  CHECK(sink.written() == 0);
  CHECK(sink.dropped() == 10);
  CHECK(sink.errors() == 1);
  REQUIRE(!errors.empty());
  CHECK(errors[0].find("No space left on device") != std::string::npos);
}

TEST_CASE("a FIFO with no reader as the log file is a clear error at once, not a hang") {
  const fs::path dir = fs::temp_directory_path() / ("varanus-fifo-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path fifo = dir / "events.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(sinks::FileSink({fifo.string()}), doctest::Contains("a FIFO with no reader"),
                       std::system_error);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  // With a reader it works, and a reader that stops costs drops, not a hang.
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  REQUIRE(reader >= 0);
  {
    sinks::FileSink sink({fifo.string()});
    for (int i = 0; i < 30000; ++i) sink.write(succeeded(i));
    sink.flush();
    CHECK(sink.dropped() > 0);
    CHECK(sink.written() > 0);
    sink.set_close_deadline(std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
    sink.close();
    CHECK(sink.written() + sink.dropped() == 30000);
  }
  ::close(reader);
  fs::remove_all(dir);
}
