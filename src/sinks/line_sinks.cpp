// JSON-lines sinks: stdout/stderr and files (append, rotation, reopen).
#include "varanus/sinks/line_sinks.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>

namespace varanus::sinks {

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

}  // namespace

void BufferedLineSink::write_(const RenderedEvent& event) {
  const std::string_view l = line(event);
  buffer_.append(l.data(), l.size());
  buffer_ += '\n';
  if (buffer_.size() >= kFlushThreshold) flush_();
}

void BufferedLineSink::flush_() {
  if (buffer_.empty()) return;
  try {
    write_out(buffer_);
  } catch (...) {
    // The buffer is lost: count its lines, keep memory bounded, report.
    count_dropped(static_cast<std::uint64_t>(std::count(buffer_.begin(), buffer_.end(), '\n')));
    buffer_.clear();
    throw;
  }
  buffer_.clear();
}

void BufferedLineSink::write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "write to " + what);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
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
  const int fd = ::open(options_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno(errno, "open " + options_.path);
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

void FileSink::write_out(std::string_view data) {
  if (fd_ < 0) open();  // a failed reopen is retried here
  const std::uint64_t max = options_.rotateBytes;
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
    write_all(fd_, chunk, options_.path);
    size_ += chunk.size();
    data.remove_prefix(chunk.size());
    if (max != 0 && !data.empty() && size_ + data.size() > max) rotate();
  }
}

void FileSink::close_() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void FileSink::reopen_() {
  flush_();  // buffered lines go to the file they were meant for
  close_();
  open();
}

}  // namespace varanus::sinks
