// JSON-lines sinks: stdout/stderr and files (append, rotation, reopen).
#include "varanus/sinks/line_sinks.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <system_error>

namespace varanus::sinks {

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

}  // namespace

void BufferedLineSink::write_(const RenderedEvent& event) {
  if (buffer_.size() >= kMaxPending) {
    flush_();  // the reader may have caught up
    if (buffer_.size() >= kMaxPending) {
      count_dropped();  // a reader that stopped: this sink's loss alone
      return;
    }
  }
  const std::string_view l = line(event);
  buffer_.append(l.data(), l.size());
  buffer_ += '\n';
  if (buffer_.size() >= kFlushThreshold) flush_();
}

void BufferedLineSink::flush_() {
  if (buffer_.empty()) return;
  std::size_t taken = 0;
  try {
    taken = write_out(buffer_);
  } catch (...) {
    // The buffer is lost: its lines move from written to dropped, memory
    // stays bounded, the Sink base reports the error.
    count_unwritten(static_cast<std::uint64_t>(std::count(buffer_.begin(), buffer_.end(), '\n')));
    buffer_.clear();
    throw;
  }
  buffer_.erase(0, taken);  // what the reader did not take waits for the next flush
}

void BufferedLineSink::close_() {
  const auto deadline = close_deadline();
  while (!buffer_.empty()) {
    const std::size_t before = buffer_.size();
    flush_();
    if (buffer_.empty()) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    if (buffer_.size() == before) {
      const int fd = out_fd();
      if (fd < 0) break;
      pollfd p{fd, POLLOUT, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count() + 1, 1000)));
    }
  }
  if (buffer_.empty()) return;
  const auto lost = static_cast<std::uint64_t>(std::count(buffer_.begin(), buffer_.end(), '\n'));
  buffer_.clear();
  count_unwritten(lost);
  report(std::to_string(lost) +
             " events not written by the close deadline (the reader is not "
             "reading): dropped",
         true);
}

std::size_t BufferedLineSink::write_some(int fd, std::string_view data, const std::string& what,
                                         bool socket) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        socket ? ::send(fd, data.data() + done, data.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL)
               : ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      throw_errno(errno, "write to " + what);
    }
    done += static_cast<std::size_t>(n);
  }
  return done;
}

StreamSink::StreamSink(int fd, std::string name, RenderOptions render, SinkFilter filter)
    : BufferedLineSink(std::move(name), render, std::move(filter)), fd_(fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return;  // a bad descriptor fails at the first write
  if (S_ISSOCK(st.st_mode)) {
    socket_ = true;
  } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
    // A description of our own: O_NONBLOCK on the inherited one would
    // change it for every process sharing it (the shell, a terminal).
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    own_ = ::open(self.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  }
}

StreamSink::~StreamSink() {
  if (own_ >= 0) ::close(own_);
}

std::size_t StreamSink::write_out(std::string_view data) {
  return write_some(own_ >= 0 ? own_ : fd_, data, name(), socket_);
}

void StreamSink::close_() {
  BufferedLineSink::close_();
  if (own_ >= 0) {
    ::close(own_);
    own_ = -1;
  }
}

std::shared_ptr<StreamSink> make_stdout_sink(RenderOptions render, SinkFilter filter) {
  return std::make_shared<StreamSink>(STDOUT_FILENO, "stdout", render, std::move(filter));
}

std::shared_ptr<StreamSink> make_stderr_sink(RenderOptions render, SinkFilter filter) {
  return std::make_shared<StreamSink>(STDERR_FILENO, "stderr", render, std::move(filter));
}

FileSink::FileSink(FileSinkOptions options, RenderOptions render, SinkFilter filter)
    : BufferedLineSink("file:" + options.path, render, std::move(filter)),
      options_(std::move(options)) {
  open();
}

FileSink::~FileSink() {
  if (fd_ >= 0) ::close(fd_);
}

void FileSink::open() {
  // Non-blocking: open(2) of a FIFO with no reader would otherwise wait
  // for one, silently, before varanus has even started.
  const int fd =
      ::open(options_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0) {
    const int err = errno;
    if (err == ENXIO)
      throw_errno(err,
                  "open " + options_.path + ": a FIFO with no reader (start its reader first)");
    throw_errno(err, "open " + options_.path);
  }
  struct stat st {};
  size_ = ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  fd_ = fd;
}

void FileSink::rotate() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  const std::string& p = options_.path;
  if (options_.keepFiles == 0) {
    ::unlink(p.c_str());
  } else {
    // path.(N-1) -> path.N, ..., path -> path.1 (rename replaces path.N).
    for (unsigned i = options_.keepFiles - 1; i >= 1; --i)
      std::rename((p + "." + std::to_string(i)).c_str(), (p + "." + std::to_string(i + 1)).c_str());
    if (std::rename(p.c_str(), (p + ".1").c_str()) != 0 && errno != ENOENT)
      throw_errno(errno, "rotate " + p);
  }
  open();
}

std::size_t FileSink::write_out(std::string_view all) {
  if (fd_ < 0) open();  // a failed reopen is retried here
  const std::uint64_t max = options_.rotateBytes;
  std::string_view data = all;
  while (!data.empty()) {
    std::string_view chunk = data;
    if (max != 0 && size_ + data.size() > max) {
      // As many whole lines as still fit; a file that is empty takes at
      // least one line however long.
      const std::size_t room = size_ >= max ? 0 : static_cast<std::size_t>(max - size_);
      const std::size_t nl = room == 0 ? std::string_view::npos : data.rfind('\n', room - 1);
      if (nl != std::string_view::npos) {
        chunk = data.substr(0, nl + 1);
      } else if (size_ == 0) {
        const std::size_t first = data.find('\n');
        chunk = data.substr(0, first == std::string_view::npos ? data.size() : first + 1);
      } else {
        rotate();
        continue;
      }
    }
    const std::size_t n = write_some(fd_, chunk, options_.path, false);
    size_ += n;
    data.remove_prefix(n);
    if (n < chunk.size()) break;  // a FIFO whose reader is behind: the rest waits
    if (max != 0 && !data.empty() && size_ + data.size() > max) rotate();
  }
  return all.size() - data.size();
}

void FileSink::close_() {
  BufferedLineSink::close_();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void FileSink::reopen_() {
  flush_();  // buffered lines go to the file they were meant for
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  open();
}

}  // namespace varanus::sinks
