// varanus-bench — child processes (stub, haproxy, varanus) and what /proc
// says about them. Every wait here is bounded in time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace varanus::bench {

/// A child process whose stdout and stderr go to files.
struct Proc {
  pid_t pid = -1;
  std::string name;
  std::string outPath;  ///< stdout ("/dev/null" allowed)
  std::string errPath;  ///< stderr
};

/// fork + execv with stdout/stderr redirected (files created or truncated)
/// and PR_SET_PDEATHSIG, so a child never outlives the benchmark. Throws
/// std::runtime_error when the program cannot be started.
Proc spawn(const std::string& name, const std::vector<std::string>& argv,
           const std::string& outPath, const std::string& errPath);

/// SIGTERM, then SIGKILL after `grace`; reaps the child. Idempotent.
void stop(Proc& p, std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

/// True while the child runs (reaps it when it has exited).
bool alive(Proc& p);

/// Waits (polling, at most `timeout`) for a line of `path` for which
/// `match` returns a value; nullopt on timeout or when `p` exits.
std::optional<std::string> wait_for_line(
    Proc& p, const std::string& path,
    const std::function<std::optional<std::string>(const std::string&)>& match,
    std::chrono::milliseconds timeout);

/// The first "127.0.0.1:PORT" in a line, as a port.
std::optional<std::uint16_t> port_in(const std::string& line, std::string_view after = {});

/// A port that was free a moment ago (bind 127.0.0.1:0, read, close).
std::uint16_t free_port();

/// Connects to 127.0.0.1:port until it succeeds or `timeout` passes.
bool wait_listening(std::uint16_t port, std::chrono::milliseconds timeout);

/// user+system CPU seconds of the whole process (all threads), from
/// /proc/PID/stat; negative when unreadable.
double cpu_seconds(pid_t pid);
/// The same for one thread (/proc/PID/task/TID/stat); tid == pid is the main
/// thread (varanus runs its only I/O thread there with --io-threads 1).
double cpu_seconds_task(pid_t pid, pid_t tid);
/// VmRSS / VmHWM in KiB from /proc/PID/status; -1 when unreadable.
long rss_kib(pid_t pid);
long hwm_kib(pid_t pid);
/// Threads of the process (/proc/PID/status Threads:).
long thread_count(pid_t pid);

/// Runs a program to completion (bounded by `timeout`) and returns its
/// stdout+stderr; nullopt if it could not run or timed out.
std::optional<std::string> run_capture(const std::vector<std::string>& argv,
                                       std::chrono::milliseconds timeout);

/// GET http://127.0.0.1:port/path, body only; nullopt on failure.
std::optional<std::string> http_get(std::uint16_t port, const std::string& path,
                                    std::chrono::milliseconds timeout);

std::string read_file(const std::string& path);
/// The 1-minute load average, from /proc/loadavg.
double load_average();
/// CPU seconds the whole machine has been busy (all cores; /proc/stat:
/// user nice system irq softirq steal).
double machine_busy_seconds();
/// CPU-seconds the hypervisor gave to other guests while this one wanted to
/// run (/proc/stat "steal"): the noise a VM's neighbours add.
double steal_seconds();
/// CPU seconds of this process plus its reaped children (getrusage).
double own_cpu_seconds();

}  // namespace varanus::bench
