// varanus::sinks — JSON-lines sinks: stdout / stderr and files.
//
// Lines are appended to a buffer and written with one write(2) per batch
// (the Dispatcher flushes after each batch), or earlier when the buffer
// passes 256 KiB. Nothing is lost on shutdown: close() flushes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "varanus/sinks/sink.hpp"

namespace varanus::sinks {

/// Base of the line sinks: buffers "line\n" and writes the buffer out in
/// flush_(). A failed write throws (the Sink base reports it) and counts
/// the buffered lines as dropped.
class BufferedLineSink : public Sink {
 public:
  static constexpr std::size_t kFlushThreshold = 256 * 1024;

 protected:
  using Sink::Sink;
  void write_(const RenderedEvent& event) override;
  void flush_() override;
  /// Writes whole lines. Throws std::system_error on failure.
  virtual void write_out(std::string_view data) = 0;

  /// write(2) until done, retrying on EINTR / short writes.
  static void write_all(int fd, std::string_view data, const std::string& what);

 private:
  std::string buffer_;
};

/// JSON lines on an inherited descriptor (stdout, stderr). The descriptor
/// is not closed.
class StreamSink : public BufferedLineSink {
 public:
  StreamSink(int fd, std::string name, RenderOptions render = {}, SinkFilter filter = {})
      : BufferedLineSink(std::move(name), render, std::move(filter)), fd_(fd) {}

 protected:
  void write_out(std::string_view data) override { write_all(fd_, data, name()); }

 private:
  int fd_;
};

/// stdout / stderr sinks, named "stdout" / "stderr".
std::shared_ptr<StreamSink> make_stdout_sink(RenderOptions render = {}, SinkFilter filter = {});
std::shared_ptr<StreamSink> make_stderr_sink(RenderOptions render = {}, SinkFilter filter = {});

struct FileSinkOptions {
  std::string path;
  /// > 0: when the file would grow past this many bytes, it is renamed to
  /// path.1 (path.1 to path.2, ...) and a new file is started. Lines are
  /// never split across files.
  std::uint64_t rotateBytes = 0;
  /// Rotated files kept (path.1 .. path.N); older ones are deleted.
  unsigned keepFiles = 5;
};

/// JSON lines appended to a file (created 0644 if missing). reopen() closes
/// and reopens the path, so `logrotate` (move, then SIGHUP) works; the
/// Dispatcher calls it on the sink thread after Dispatcher::reopen().
/// Named "file:<path>".
class FileSink : public BufferedLineSink {
 public:
  /// Opens the file at once; throws std::system_error naming the path.
  explicit FileSink(FileSinkOptions options, RenderOptions render = {}, SinkFilter filter = {});
  ~FileSink() override;

  const std::string& path() const noexcept { return options_.path; }
  /// Bytes in the current file (as far as this sink knows).
  std::uint64_t size() const noexcept { return size_; }

 protected:
  void write_out(std::string_view data) override;
  void close_() override;
  void reopen_() override;

 private:
  void open();
  void rotate();

  FileSinkOptions options_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace varanus::sinks
