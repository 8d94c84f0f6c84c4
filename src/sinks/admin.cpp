// The admin HTTP endpoint (Boost.Beast, C++20 coroutines, one thread).
// Kept apart from the rest of the sinks so that only this file pays for
// Beast's compile time.
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "varanus/sinks/command_stats.hpp"
#include "varanus/sinks/dispatcher.hpp"
#include "varanus/sinks/metrics.hpp"
#include "varanus/sinks/otlp.hpp"

namespace varanus::sinks {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

namespace {

// Shortest text that reads back as the same double ("0.000418", "1e+21").
void append_double(std::string& out, double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void gauge(std::string& out, std::string_view name, std::string_view type, std::string_view help,
           double value) {
  family(out, name, type, help);
  out += name;
  out += ' ';
  append_double(out, value);
  out += '\n';
}

// The standard process metrics of Prometheus client libraries, from /proc.
void process_metrics(std::string& out) {
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream statFile("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(statFile)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces), from field 3 on.
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || ticks <= 0) return;
  std::istringstream fields(stat.substr(paren + 2));
  std::vector<std::string> f;
  for (std::string x; fields >> x;) f.push_back(x);
  auto field = [&](std::size_t n) -> double {  // n: the 1-based field number of proc(5)
    const std::size_t i = n - 3;
    return i < f.size() ? std::strtod(f[i].c_str(), nullptr) : 0.0;
  };
  gauge(out, "process_cpu_seconds_total", "counter",
        "Total user and system CPU time spent in seconds.", (field(14) + field(15)) / ticks);
  gauge(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", field(23));
  gauge(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
        field(24) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
  double btime = 0;
  std::ifstream procStat("/proc/stat");
  for (std::string line; std::getline(procStat, line);)
    if (line.rfind("btime ", 0) == 0) btime = std::strtod(line.c_str() + 6, nullptr);
  gauge(out, "process_start_time_seconds", "gauge",
        "Start time of the process since unix epoch in seconds.", btime + field(22) / ticks);
  std::size_t fds = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++fds;
    ::closedir(d);
    fds = fds > 0 ? fds - 1 : 0;  // the directory's own descriptor
  }
  gauge(out, "process_open_fds", "gauge", "Number of open file descriptors.",
        static_cast<double>(fds));
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0)
    gauge(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
          static_cast<double>(rl.rlim_cur));
}

}  // namespace

int connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout,
                std::string& error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
      rc != 0 || res == nullptr) {
    error = std::string("cannot resolve: ") + gai_strerror(rc);
    return -1;
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (n <= 0) {
        err = ETIMEDOUT;
      } else {
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
  }
  ::freeaddrinfo(res);
  if (err != 0) {
    if (fd >= 0) ::close(fd);
    error = std::strerror(err);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

HealthCheck tcp_health_check(std::string host, std::uint16_t port,
                             std::chrono::milliseconds timeout) {
  return [host = std::move(host), port, timeout]() -> std::pair<bool, std::string> {
    const std::string where = host + ":" + std::to_string(port);
    std::string error;
    const int fd = connect_tcp(host, port, timeout, error);
    if (fd < 0) return {false, "upstream " + where + " unreachable: " + error};
    ::close(fd);
    return {true, "upstream " + where + " reachable"};
  };
}

struct AdminServer::Impl {
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::size_t connections = 0;  // open now (the admin thread's)
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> badRequests{0};
  // The heartbeat: runs the (blocking) health check every healthInterval
  // and keeps its result for /healthz.
  std::thread healthThread;
  mutable std::mutex healthMutex;
  std::condition_variable healthWake;
  bool healthStopping = false;
  bool healthChecked = false;
  std::pair<bool, std::string> health{false, ""};
  std::chrono::steady_clock::time_point healthAt{};
};

std::uint64_t AdminServer::refused_connections() const noexcept {
  return impl_ ? impl_->refused.load(std::memory_order_relaxed) : 0;
}

std::uint64_t AdminServer::bad_requests() const noexcept {
  return impl_ ? impl_->badRequests.load(std::memory_order_relaxed) : 0;
}

std::pair<bool, std::string> AdminServer::health_status() const {
  if (!health_) return {true, "no health check configured"};
  if (!impl_) return {false, "admin endpoint not started"};
  std::lock_guard lock(impl_->healthMutex);
  if (!impl_->healthChecked) return {false, "upstream not checked yet (first check under way)"};
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - impl_->healthAt)
                      .count();
  char age[48];
  std::snprintf(age, sizeof age, " (checked %.1f s ago)", static_cast<double>(ms) / 1000.0);
  return {impl_->health.first, impl_->health.second + age};
}

AdminServer::AdminServer(AdminOptions options, const monitor::Stats& stats,
                         const Dispatcher* dispatcher, std::shared_ptr<const MetricsSink> metrics,
                         HealthCheck health)
    : options_(std::move(options)),
      stats_(stats),
      dispatcher_(dispatcher),
      metrics_(std::move(metrics)),
      health_(std::move(health)) {}

AdminServer::~AdminServer() {
  stop();
}

std::string AdminServer::metrics_text() const {
  std::string out;
  out.reserve(16 * 1024);
  family(out, "varanus_build_info", "gauge", "Always 1; labels: the running varanus");
  out += "varanus_build_info{version=\"";
  append_label_value(out, version_);
  out += "\"} 1\n";
  process_metrics(out);
  stats_.for_each(
      [&](std::string_view name, std::string_view type, std::string_view help, std::int64_t value) {
        family(out, name, type, help);
        out += name;
        out += ' ';
        out += std::to_string(value);
        out += '\n';
      });
  family(out, "varanus_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed, by leg (client, upstream) and reason");
  stats_.for_each_tls_failure([&](std::string_view leg, std::string_view kind, std::int64_t n) {
    out += "varanus_tls_handshake_failures_total{leg=\"";
    out += leg;
    out += "\",reason=\"";
    out += kind;
    out += "\"} ";
    out += std::to_string(n);
    out += '\n';
  });
  if (const auto notAfter = stats_.tlsCertificateNotAfter.load(std::memory_order_relaxed)) {
    family(out, "varanus_tls_certificate_expiry_seconds", "gauge",
           "Seconds until the certificate varanus serves to clients expires (negative: expired)");
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    out += "varanus_tls_certificate_expiry_seconds ";
    out += std::to_string(notAfter - now);
    out += '\n';
  }
  if (dispatcher_ != nullptr) {
    struct Family {
      const char* name;
      const char* help;
      std::uint64_t (Sink::*get)() const noexcept;
    };
    static constexpr Family kFamilies[] = {
        {"varanus_sink_events_written_total", "Events a sink took", &Sink::written},
        {"varanus_sink_events_filtered_total", "Events a sink's filter left out", &Sink::filtered},
        {"varanus_sink_events_dropped_total",
         "Events a sink lost (queue full, collector down or slow)", &Sink::dropped},
        {"varanus_sink_errors_total", "Failures of a sink (exceptions, write errors)",
         &Sink::errors},
    };
    for (const Family& f : kFamilies) {
      family(out, f.name, "counter", f.help);
      for (const auto& sink : dispatcher_->sinks()) {
        out += f.name;
        out += "{sink=\"";
        append_label_value(out, sink->name());
        out += "\"} ";
        out += std::to_string(((*sink).*f.get)());
        out += '\n';
      }
    }
    out +=
        "# HELP varanus_event_queue_capacity Events the sink queue holds\n# TYPE "
        "varanus_event_queue_capacity gauge\nvaranus_event_queue_capacity ";
    out += std::to_string(dispatcher_->capacity());
    out +=
        "\n# HELP varanus_event_queue_depth Events waiting in the sink queue now\n# TYPE "
        "varanus_event_queue_depth gauge\nvaranus_event_queue_depth ";
    out += std::to_string(dispatcher_->depth());
    out += '\n';
    std::vector<const OtlpSink*> otlp;
    for (const auto& sink : dispatcher_->sinks())
      if (const auto* o = dynamic_cast<const OtlpSink*>(sink.get())) otlp.push_back(o);
    render_otlp_metrics(out, otlp);
  }
  if (metrics_) metrics_->render(out);
  return out;
}

std::string AdminServer::command_stats_json() const {
  return commandStats_ ? commandStats_->json() : std::string("{}");
}

std::string AdminServer::stats_json() const {
  nlohmann::json j;
  nlohmann::json counters = nlohmann::json::object();
  stats_.for_each([&](std::string_view name, std::string_view, std::string_view,
                      std::int64_t value) { counters[std::string(name)] = value; });
  j["counters"] = std::move(counters);
  nlohmann::json sinks = nlohmann::json::array();
  if (dispatcher_ != nullptr) {
    for (const auto& s : dispatcher_->sinks())
      sinks.push_back({{"name", s->name()},
                       {"format", to_string(s->render_options().format)},
                       {"written", s->written()},
                       {"filtered", s->filtered()},
                       {"dropped", s->dropped()},
                       {"errors", s->errors()}});
    j["queue"] = {{"capacity", dispatcher_->capacity()},
                  {"depth", dispatcher_->depth()},
                  {"dropped", dispatcher_->dropped()},
                  {"rescues", dispatcher_->rescues()}};
  }
  j["sinks"] = std::move(sinks);
  // The latest topologyDescriptionChanged of varanus's topology monitor;
  // null when none runs.
  nlohmann::json topology = nullptr;
  if (metrics_) {
    if (const auto t = metrics_->topology()) {
      topology = {{"type", t->type}};
      if (t->setName) topology["setName"] = *t->setName;
      nlohmann::json servers = nlohmann::json::array();
      for (const auto& s : t->servers) {
        nlohmann::json server = {{"address", s.address}, {"type", s.type}};
        if (!s.via.empty()) server["via"] = s.via;
        if (s.roundTripTimeMicros) server["roundTripTimeMicros"] = *s.roundTripTimeMicros;
        servers.push_back(std::move(server));
      }
      topology["servers"] = std::move(servers);
    }
  }
  j["topology"] = std::move(topology);
  // Member addresses come from servers' hello replies: never let a byte
  // that is not UTF-8 make the dump throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

asio::awaitable<void> reply_and_close(beast::tcp_stream& stream, http::status status,
                                      std::string body) {
  http::response<http::string_body> res{status, 11};
  res.set(http::field::server, "varanus");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(false);
  res.body() = std::move(body);
  res.prepare_payload();
  stream.expires_after(std::chrono::seconds(2));
  auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  // Read what the client still sends (briefly) before closing: closing
  // with unread bytes would reset the connection, and the client could
  // lose the answer.
  stream.expires_after(std::chrono::milliseconds(500));
  char sink[4096];
  for (int i = 0; i < 64 && !wec; ++i) {
    auto [rec, rn] =
        co_await stream.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
    if (rec) break;
  }
}

asio::awaitable<void> serve(beast::tcp_stream stream, const AdminServer& admin,
                            const AdminOptions& options, std::atomic<std::uint64_t>& badRequests) {
  beast::flat_buffer buffer;
  for (;;) {
    stream.expires_after(options.idleTimeout);
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.maxHeaderBytes));
    parser.body_limit(64 * 1024);  // GET and HEAD carry none
    auto [rec, rn] =
        co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rec == http::error::header_limit) {
      badRequests.fetch_add(1, std::memory_order_relaxed);
      co_await reply_and_close(
          stream, http::status::request_header_fields_too_large,
          "request headers over " + std::to_string(options.maxHeaderBytes) + " bytes\n");
      co_return;
    }
    if (rec && rec.category() == http::make_error_code(http::error::bad_method).category() &&
        rec != http::error::end_of_stream && rec != http::error::partial_message) {
      badRequests.fetch_add(1, std::memory_order_relaxed);
      co_await reply_and_close(stream, http::status::bad_request,
                               "malformed request: " + rec.message() + "\n");
      co_return;
    }
    if (rec) break;  // closed, timed out, reset
    http::request<http::string_body>& req = parser.get();
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::server, "varanus");
    res.keep_alive(req.keep_alive());
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
      res.body() = "method not allowed\n";
    } else if (path == "/metrics") {
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = admin.metrics_text();
    } else if (path == "/healthz") {
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      // The heartbeat's last result: never a connect on this thread.
      auto [ok, message] = admin.health_status();
      res.result(ok ? http::status::ok : http::status::service_unavailable);
      res.body() = (ok ? "ok: " : "unhealthy: ") + message + "\n";
    } else if (path == "/stats/commands") {
      res.set(http::field::content_type, "application/json");
      res.body() = admin.command_stats_json() + "\n";
    } else if (path == "/stats") {
      res.set(http::field::content_type, "application/json");
      res.body() = admin.stats_json() + "\n";
    } else {
      res.result(http::status::not_found);
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "not found; try /metrics, /healthz, /stats or /stats/commands\n";
    }
    res.prepare_payload();
    if (req.method() == http::verb::head) res.body().clear();
    auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, const AdminServer& admin,
                                  const AdminOptions& options, std::size_t& open,
                                  std::atomic<std::uint64_t>& refused,
                                  std::atomic<std::uint64_t>& badRequests) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      continue;
    }
    if (open >= options.maxConnections) {
      // Over the cap: a short answer and close, so that slow or idle
      // clients never hold more than maxConnections descriptors.
      refused.fetch_add(1, std::memory_order_relaxed);
      asio::co_spawn(
          acceptor.get_executor(),
          [](beast::tcp_stream s, std::size_t max) -> asio::awaitable<void> {
            co_await reply_and_close(
                s, http::status::service_unavailable,
                "too many admin connections (maxConnections " + std::to_string(max) + ")\n");
          }(beast::tcp_stream(std::move(socket)), options.maxConnections),
          asio::detached);
      continue;
    }
    ++open;
    asio::co_spawn(acceptor.get_executor(),
                   serve(beast::tcp_stream(std::move(socket)), admin, options, badRequests),
                   [&open](std::exception_ptr) { --open; });
  }
}

}  // namespace

std::uint16_t AdminServer::start() {
  if (impl_) return impl_->acceptor.local_endpoint().port();
  auto fresh = std::make_unique<Impl>();
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  try {
    tcp::resolver resolver(fresh->io);
    const auto results = resolver.resolve(options_.host, std::to_string(options_.port),
                                          tcp::resolver::passive | tcp::resolver::numeric_service);
    const tcp::endpoint ep = results.begin()->endpoint();
    fresh->acceptor.open(ep.protocol());
    fresh->acceptor.set_option(tcp::acceptor::reuse_address(true));
    fresh->acceptor.bind(ep);
    fresh->acceptor.listen();
  } catch (const boost::system::system_error& e) {
    throw std::system_error(e.code().value(), std::system_category(),
                            "admin endpoint " + where + ": " + e.code().message());
  }
  // impl_ is set before any thread runs: health_status() reads it there.
  impl_ = std::move(fresh);
  Impl* const impl = impl_.get();
  asio::co_spawn(impl->io,
                 accept_loop(impl->acceptor, *this, options_, impl->connections, impl->refused,
                             impl->badRequests),
                 asio::detached);
  if (health_) {
    impl->healthThread = std::thread([impl, health = health_, interval = options_.healthInterval] {
      std::unique_lock lock(impl->healthMutex);
      while (!impl->healthStopping) {
        lock.unlock();
        std::pair<bool, std::string> r;
        try {
          r = health();  // may block up to its timeout: only this thread waits
        } catch (const std::exception& e) {
          r = {false, std::string("health check failed: ") + e.what()};
        }
        lock.lock();
        impl->health = std::move(r);
        impl->healthAt = std::chrono::steady_clock::now();
        impl->healthChecked = true;
        impl->healthWake.wait_for(lock, interval, [impl] { return impl->healthStopping; });
      }
    });
  }
  impl->thread = std::thread([impl] { impl->io.run(); });
  return impl->acceptor.local_endpoint().port();
}

void AdminServer::stop() {
  if (!impl_) return;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->io.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
  {
    std::lock_guard lock(impl_->healthMutex);
    impl_->healthStopping = true;
  }
  impl_->healthWake.notify_all();
  if (impl_->healthThread.joinable()) impl_->healthThread.join();
  impl_.reset();
}

}  // namespace varanus::sinks
