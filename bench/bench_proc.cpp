// varanus-bench — child processes and /proc readings.
#include "bench_proc.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace varanus::bench {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void child_exec(const std::vector<std::string>& argv, const std::string& outPath,
                             const std::string& errPath) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int in = ::open("/dev/null", O_RDONLY);
  int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (in < 0 || out < 0 || err < 0) ::_exit(126);
  ::dup2(in, 0);
  ::dup2(out, 1);
  ::dup2(err, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  ::_exit(127);
}

}  // namespace

Proc spawn(const std::string& name, const std::vector<std::string>& argv,
           const std::string& outPath, const std::string& errPath) {
  if (argv.empty() || ::access(argv[0].c_str(), X_OK) != 0) {
    throw std::runtime_error(name + ": cannot execute '" + (argv.empty() ? "" : argv[0]) + "'");
  }
  // Empty the output files here, not in the child: a caller polling them for
  // a start-up line must not read the previous run's line.
  for (const std::string* path : {&outPath, &errPath}) {
    if (path->rfind("/dev/", 0) != 0) ::truncate(path->c_str(), 0);
  }
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(name + ": fork failed: " + std::strerror(errno));
  if (pid == 0) child_exec(argv, outPath, errPath);
  return Proc{pid, name, outPath, errPath};
}

bool alive(Proc& p) {
  if (p.pid <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(p.pid, &status, WNOHANG);
  if (r == p.pid) {
    p.pid = -1;
    return false;
  }
  return r == 0;
}

void stop(Proc& p, std::chrono::milliseconds grace) {
  if (p.pid <= 0) return;
  ::kill(p.pid, SIGTERM);
  const auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    if (!alive(p)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (p.pid > 0) {
    ::kill(p.pid, SIGKILL);
    int status = 0;
    ::waitpid(p.pid, &status, 0);
    p.pid = -1;
  }
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::optional<std::string> wait_for_line(
    Proc& p, const std::string& path,
    const std::function<std::optional<std::string>(const std::string&)>& match,
    std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::istringstream lines(read_file(path));
    std::string line;
    while (std::getline(lines, line)) {
      if (auto v = match(line)) return v;
    }
    if (!alive(p) || Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::optional<std::uint16_t> port_in(const std::string& line, std::string_view after) {
  std::size_t from = 0;
  if (!after.empty()) {
    from = line.find(after);
    if (from == std::string::npos) return std::nullopt;
  }
  const std::string host = "127.0.0.1:";
  auto at = line.find(host, from);
  if (at == std::string::npos) return std::nullopt;
  unsigned long v = 0;
  std::size_t i = at + host.size();
  std::size_t digits = 0;
  while (i < line.size() && line[i] >= '0' && line[i] <= '9' && digits < 6) {
    v = v * 10 + static_cast<unsigned long>(line[i] - '0');
    ++i;
    ++digits;
  }
  if (digits == 0 || v == 0 || v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

bool wait_listening(std::uint16_t port, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

namespace {
double stat_cpu_seconds(const std::string& path) {
  const std::string s = read_file(path);
  auto close = s.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(s.substr(close + 2));
  // Fields after "(comm)": state(3) ppid pgrp session tty_nr tpgid flags minflt
  // cminflt majflt cmajflt utime(14) stime(15).
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (in >> field); ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  const long hz = ::sysconf(_SC_CLK_TCK);
  return static_cast<double>(utime + stime) / static_cast<double>(hz > 0 ? hz : 100);
}
}  // namespace

double cpu_seconds(pid_t pid) {
  return stat_cpu_seconds("/proc/" + std::to_string(pid) + "/stat");
}

double cpu_seconds_task(pid_t pid, pid_t tid) {
  return stat_cpu_seconds("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) +
                          "/stat");
}

namespace {
long status_field(pid_t pid, const std::string& key) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + key.size(), nullptr, 10);
  }
  return -1;
}
}  // namespace

long rss_kib(pid_t pid) {
  return status_field(pid, "VmRSS:");
}
long hwm_kib(pid_t pid) {
  return status_field(pid, "VmHWM:");
}
long thread_count(pid_t pid) {
  return status_field(pid, "Threads:");
}

std::optional<std::string> run_capture(const std::vector<std::string>& argv,
                                       std::chrono::milliseconds timeout) {
  char tmpl[] = "/tmp/varanus-bench-capture-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return std::nullopt;
  ::close(fd);
  std::optional<std::string> out;
  try {
    Proc p = spawn("capture", argv, tmpl, tmpl);
    const auto deadline = Clock::now() + timeout;
    while (alive(p) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (p.pid > 0) {
      stop(p);
    } else {
      out = read_file(tmpl);
    }
  } catch (const std::exception&) {
  }
  ::unlink(tmpl);
  return out;
}

std::optional<std::string> http_get(std::uint16_t port, const std::string& path,
                                    std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  std::optional<std::string> body;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req =
        "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      std::string resp;
      char buf[16384];
      const auto deadline = Clock::now() + timeout;
      for (int i = 0; i < 100000 && Clock::now() < deadline; ++i) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        resp.append(buf, static_cast<std::size_t>(n));
      }
      auto sep = resp.find("\r\n\r\n");
      if (resp.rfind("HTTP/1.", 0) == 0 && resp.find(" 200") != std::string::npos &&
          sep != std::string::npos) {
        body = resp.substr(sep + 4);
      }
    }
  }
  ::close(fd);
  return body;
}

double load_average() {
  std::istringstream in(read_file("/proc/loadavg"));
  double v = -1;
  in >> v;
  return v;
}

namespace {
struct CpuTimes {
  double busy = -1;   // user + nice + system + irq + softirq, seconds (all CPUs)
  double steal = -1;  // time the hypervisor ran someone else
};
CpuTimes cpu_times() {
  std::istringstream in(read_file("/proc/stat"));
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  CpuTimes t;
  if (cpu != "cpu") return t;
  const long hz = ::sysconf(_SC_CLK_TCK);
  const double tick = 1.0 / static_cast<double>(hz > 0 ? hz : 100);
  t.busy = static_cast<double>(user + nice + system + irq + softirq) * tick;
  t.steal = static_cast<double>(steal) * tick;
  return t;
}
}  // namespace

double machine_busy_seconds() {
  return cpu_times().busy;
}

double steal_seconds() {
  return cpu_times().steal;
}

double own_cpu_seconds() {
  auto secs = [](const rusage& r) {
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
  };
  rusage self{}, children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  return secs(self) + secs(children);
}

}  // namespace varanus::bench
