// varanus::sinks — JSON-lines sinks: stdout / stderr and files.
//
// Lines are appended to a buffer and written with one write(2) per batch
// (the Dispatcher flushes after each batch), or earlier when the buffer
// passes 256 KiB. Writes never wait: a reader that stops reading costs this
// sink events (counted), never the sink thread. close() flushes, waiting
// until the close deadline at most.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "varanus/sinks/sink.hpp"

namespace varanus::sinks {

/// Base of the line sinks: buffers "line\n" and writes the buffer out in
/// flush_(). Writes never block the sink thread: the descriptor is written
/// without waiting (O_NONBLOCK on a private open file description of a pipe,
/// FIFO or terminal; MSG_DONTWAIT on a socket), what it does not take stays
/// buffered for the next flush, and once kMaxPending bytes wait, new events
/// are dropped and counted as this sink's drops. So a reader that stopped
/// reading costs this sink its events, never the other sinks theirs. A failed
/// write throws (the Sink base reports it) and moves the lines it lost from
/// written() to dropped().
class BufferedLineSink : public Sink {
 public:
  static constexpr std::size_t kFlushThreshold = 256 * 1024;
  /// Bytes that may wait for a slow reader before events are dropped.
  static constexpr std::size_t kMaxPending = 4 * 1024 * 1024;
  /// Bytes buffered, not yet taken by the descriptor.
  std::size_t pending() const noexcept { return buffer_.size(); }

 protected:
  using Sink::Sink;
  void write_(const RenderedEvent& event) override;
  void flush_() override;
  /// At close: waits for the descriptor to take what is buffered until the
  /// close deadline (Sink::close_deadline()); what is left then is dropped,
  /// counted and said once through the error handler.
  void close_() override;
  /// Writes what the output takes now, without waiting: the bytes taken
  /// (fewer than data.size() when it would block). Throws std::system_error
  /// on failure.
  virtual std::size_t write_out(std::string_view data) = 0;
  /// The descriptor write_out() writes to (for poll at close), or -1.
  virtual int out_fd() const noexcept = 0;
  /// write(2) (send(2) on a socket) without waiting, retrying on EINTR and
  /// short writes: the bytes taken. Throws std::system_error naming `what`.
  static std::size_t write_some(int fd, std::string_view data, const std::string& what,
                                bool socket);

 private:
  std::string buffer_;
};

/// JSON lines on an inherited descriptor (stdout, stderr). The descriptor
/// is not closed. A pipe, FIFO or terminal is written through a private
/// non-blocking open file description (/proc/self/fd/N), so the flags of
/// the one the process shares with its parent stay as they were.
class StreamSink : public BufferedLineSink {
 public:
  StreamSink(int fd, std::string name, RenderOptions render = {}, SinkFilter filter = {});
  ~StreamSink() override;

 protected:
  std::size_t write_out(std::string_view data) override;
  int out_fd() const noexcept override { return own_ >= 0 ? own_ : fd_; }
  void close_() override;

 private:
  int fd_;
  int own_ = -1;  // the private non-blocking description, when there is one
  bool socket_ = false;
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
/// Opened non-blocking: a FIFO with no reader is a clear error at start,
/// never a silent hang, and a FIFO whose reader stops costs drops, not a
/// blocked sink thread. Named "file:<path>".
class FileSink : public BufferedLineSink {
 public:
  /// Opens the file at once; throws std::system_error naming the path.
  explicit FileSink(FileSinkOptions options, RenderOptions render = {}, SinkFilter filter = {});
  ~FileSink() override;

  const std::string& path() const noexcept { return options_.path; }
  /// Bytes in the current file (as far as this sink knows).
  std::uint64_t size() const noexcept { return size_; }

 protected:
  std::size_t write_out(std::string_view data) override;
  int out_fd() const noexcept override { return fd_; }
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
