// `varanus top`: polls the admin endpoint every second and draws the
// commands by namespace, like mongotop. Plain ANSI escapes (clear, home,
// reverse video for the header); the terminal goes to non-canonical mode so
// single keys sort (t, c, p, f) or quit (q), and is restored on exit.
#include "top.hpp"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <vector>

#include "varanus/proxy/config.hpp"

namespace varanus::app {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

const char* kUsage = R"(usage: varanus top --admin HOST:PORT [--once [--json]]

A live view of what a running varanus proxy sees, refreshed every second:
commands by namespace (database.collection) and command name, sorted by
total time, from its admin endpoint's /stats/commands (start the proxy with
--admin HOST:PORT). Times are milliseconds; COUNT, FAILED and TOTAL are since
the proxy started, the 10s columns over the last 10 seconds.

keys:   t  sort by total time (default)    c  by count
        p  by p99                          f  by failures
        q  quit

options:
  --admin HOST:PORT   the proxy's admin endpoint
  --once              print one snapshot and exit
  --json              with --once: the snapshot as JSON,
                      {"commands": [{"database", "collection", "commandName", "count",
                      "failed", "totalMicros", "p50Micros", "p95Micros", "p99Micros",
                      "maxMicros", "bytesIn", "bytesOut", "last10s", "last60s"}, ...],
                      "opsPerSecond", "connections", "eventsDropped"}
  --help              this text
)";

// GET http://host:port/target -> body. Throws on failure.
std::string http_get(const proxy::Endpoint& ep, const std::string& target) {
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  stream.connect(resolver.resolve(ep.host, std::to_string(ep.port)));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, ep.host);
  req.set(http::field::connection, "close");
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  if (res.result() != http::status::ok)
    throw std::runtime_error(target + ": HTTP " + std::to_string(res.result_int()));
  return res.body();
}

struct Snapshot {
  json commands;
  json stats;
};

Snapshot fetch(const proxy::Endpoint& ep) {
  return {json::parse(http_get(ep, "/stats/commands")), json::parse(http_get(ep, "/stats"))};
}

std::int64_t counter(const json& stats, const char* name) {
  const json* c = stats.contains("counters") ? &stats["counters"] : nullptr;
  if (c == nullptr || !c->contains(name) || !(*c)[name].is_number()) return 0;
  return (*c)[name].get<std::int64_t>();
}

double ops_per_second(const json& commands) {
  std::uint64_t n = 0;
  if (commands.contains("commands"))
    for (const auto& r : commands["commands"]) n += r["last10s"]["count"].get<std::uint64_t>();
  return static_cast<double>(n) / 10.0;
}

std::string ms(std::int64_t micros) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", static_cast<double>(micros) / 1000.0);
  return buf;
}

const char* sort_name(TopSort s) {
  switch (s) {
    case TopSort::count:
      return "count";
    case TopSort::p99:
      return "p99";
    case TopSort::failures:
      return "failures";
    case TopSort::totalTime:
      break;
  }
  return "total time";
}

// Terminal in non-canonical, no-echo mode for as long as it lives.
class RawTerminal {
 public:
  RawTerminal() {
    if (::isatty(STDIN_FILENO) == 0 || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

void write_out(std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(STDOUT_FILENO, s.data(), s.size());
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

std::string top_screen(const json& commands, const json& stats, const std::string& admin,
                       TopSort sort, std::size_t width, std::size_t height) {
  std::vector<const json*> rows;
  if (commands.contains("commands"))
    for (const auto& r : commands["commands"]) rows.push_back(&r);
  auto key = [sort](const json* r) -> std::int64_t {
    switch (sort) {
      case TopSort::count:
        return (*r)["count"].get<std::int64_t>();
      case TopSort::p99:
        return (*r)["p99Micros"].get<std::int64_t>();
      case TopSort::failures:
        return (*r)["failed"].get<std::int64_t>();
      case TopSort::totalTime:
        break;
    }
    return (*r)["totalMicros"].get<std::int64_t>();
  };
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const json* a, const json* b) { return key(a) > key(b); });

  std::string out;
  auto line = [&](std::string l) {
    if (l.size() > width) l.resize(width);
    out += l;
    out += '\n';
  };
  char buf[512];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", &tm);
  std::snprintf(buf, sizeof buf, "varanus top  %s  %s  sorted by %s", admin.c_str(), clock,
                sort_name(sort));
  line(buf);
  std::snprintf(buf, sizeof buf, "ops/s %.1f   connections %lld   events dropped %lld",
                ops_per_second(commands),
                static_cast<long long>(counter(stats, "varanus_connections_active")),
                static_cast<long long>(counter(stats, "varanus_events_dropped_total")));
  line(buf);
  line("keys: t total time  c count  p p99  f failures  q quit");
  line("");
  const char* fmt = "%-32s %-16s %9s %7s %11s %9s %9s %9s %7s %9s";
  std::snprintf(buf, sizeof buf, fmt, "NAMESPACE", "COMMAND", "COUNT", "FAILED", "TOTAL ms",
                "P50 ms", "P99 ms", "MAX ms", "10s N", "10s P99");
  line(buf);
  for (const json* r : rows) {
    if (out.size() > 0 &&
        static_cast<std::size_t>(std::count(out.begin(), out.end(), '\n')) >= height)
      break;
    std::string ns = (*r)["database"].get<std::string>();
    const std::string coll = (*r)["collection"].get<std::string>();
    if (!coll.empty()) ns += "." + coll;
    const json& w = (*r)["last10s"];
    std::snprintf(buf, sizeof buf, fmt, ns.c_str(), (*r)["commandName"].get<std::string>().c_str(),
                  std::to_string((*r)["count"].get<std::uint64_t>()).c_str(),
                  std::to_string((*r)["failed"].get<std::uint64_t>()).c_str(),
                  ms((*r)["totalMicros"].get<std::int64_t>()).c_str(),
                  ms((*r)["p50Micros"].get<std::int64_t>()).c_str(),
                  ms((*r)["p99Micros"].get<std::int64_t>()).c_str(),
                  ms((*r)["maxMicros"].get<std::int64_t>()).c_str(),
                  std::to_string(w["count"].get<std::uint64_t>()).c_str(),
                  ms(w["p99Micros"].get<std::int64_t>()).c_str());
    line(buf);
  }
  if (rows.empty()) line("(no commands yet)");
  return out;
}

int run_top(int argc, char** argv) {
  std::string admin;
  bool once = false, asJson = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--once") {
      once = true;
    } else if (a == "--json") {
      asJson = true;
    } else if (a == "--admin" && i + 1 < argc) {
      admin = argv[++i];
    } else if (a.rfind("--admin=", 0) == 0) {
      admin = std::string(a.substr(8));
    } else {
      std::fprintf(stderr, "varanus top: unknown option '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }
  const auto ep = proxy::Endpoint::parse(admin);
  if (admin.empty() || !ep || ep->port == 0) {
    std::fprintf(stderr, "varanus top: --admin HOST:PORT is required (the proxy's --admin)\n");
    return 2;
  }
  if (asJson && !once) {
    std::fprintf(stderr, "varanus top: --json goes with --once\n");
    return 2;
  }
  if (once) {
    try {
      const Snapshot s = fetch(*ep);
      if (asJson) {
        json j = s.commands;
        j["opsPerSecond"] = ops_per_second(s.commands);
        j["connections"] = counter(s.stats, "varanus_connections_active");
        j["eventsDropped"] = counter(s.stats, "varanus_events_dropped_total");
        write_out(j.dump() + "\n");
      } else {
        write_out(top_screen(s.commands, s.stats, admin, TopSort::totalTime, 200, 1000));
      }
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "varanus top: %s: %s\n", admin.c_str(), e.what());
      return 1;
    }
  }

  RawTerminal raw;
  TopSort sort = TopSort::totalTime;
  write_out("\x1b[?25l");  // hide the cursor
  int status = 0;
  for (;;) {
    winsize ws{};
    std::size_t width = 120, height = 40;
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
      width = ws.ws_col;
      height = ws.ws_row > 1 ? ws.ws_row - 1u : 1u;
    }
    std::string screen = "\x1b[H\x1b[2J";
    try {
      const Snapshot s = fetch(*ep);
      std::string text = top_screen(s.commands, s.stats, admin, sort, width, height);
      // The header line in reverse video.
      const auto nl = text.find('\n');
      screen += "\x1b[7m" + text.substr(0, nl) + "\x1b[0m" + text.substr(nl);
    } catch (const std::exception& e) {
      screen += "varanus top  " + admin + "  unreachable: " + e.what() + "\n";
    }
    write_out(screen);
    // Keys until the next refresh, a second after this one.
    const auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    bool redraw = false, quit = false;
    while (!redraw && !quit) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          next - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(left.count()));
      if (n <= 0) continue;
      char c = 0;
      const ssize_t r = ::read(STDIN_FILENO, &c, 1);
      if (r <= 0) {
        if (r == 0) quit = true;  // stdin closed
        continue;
      }
      switch (c) {
        case 'q':
        case 'Q':
          quit = true;
          break;
        case 't':
          sort = TopSort::totalTime;
          redraw = true;
          break;
        case 'c':
          sort = TopSort::count;
          redraw = true;
          break;
        case 'p':
          sort = TopSort::p99;
          redraw = true;
          break;
        case 'f':
          sort = TopSort::failures;
          redraw = true;
          break;
        default:
          break;
      }
    }
    if (quit) break;
  }
  write_out("\x1b[?25h\n");  // the cursor back
  return status;
}

}  // namespace varanus::app
