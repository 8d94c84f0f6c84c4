// varanus: the executable. Subcommands: `varanus decode` (decode.cpp),
// `varanus healthcheck` (healthcheck.cpp), `varanus top` (top.cpp),
// `varanus replay` and `varanus sniff` (capture_cmd.cpp); anything else
// runs the proxy:
//
//   flags + config file ─▶ AppConfig + SinkPlan ─▶ SinkRuntime (Dispatcher, sinks, admin)
//                                                  proxy::Server (relay, Tracker per connection)
//   main thread: Server::run() (it is one of the I/O threads)
//   signal thread: SIGINT/SIGTERM ─▶ Server::stop(grace); a second one exits
//                  at once; SIGHUP ─▶ sinks reopen their files
//   after run() returns: SinkRuntime::stop() drains and flushes every event.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "capture_cmd.hpp"
#include "cli.hpp"
#include "decode.hpp"
#include "healthcheck.hpp"
#include "sink_config.hpp"
#include "top.hpp"
#include "varanus/monitor/sdam_events.hpp"
#include "varanus/monitor/stats.hpp"
#include "varanus/proxy/server.hpp"
#include "varanus/proxy/tls.hpp"
#include "varanus/proxy/topology_monitor.hpp"

#ifndef VARANUS_VERSION
#error "VARANUS_VERSION is set by src/app/CMakeLists.txt from the project version"
#endif

namespace {

using namespace varanus;

/// "127.x.y.z:port", "[::1]:port", "localhost:port".
bool loopback_address(const std::string& hostPort) {
  const std::string host = hostPort.substr(0, hostPort.rfind(':'));
  return host.rfind("127.", 0) == 0 || host == "[::1]" || host == "::1" || host == "localhost";
}

void diag(std::string_view line) {
  static const auto out = proxy::stderr_diagnostics();
  out(line);
}

std::string seconds(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

/// Raises the open-files limit (RLIMIT_NOFILE) to its hard limit and fits
/// maxConnections to it: 0 becomes what the limit allows (two descriptors a
/// connection, 64 kept for listeners, sinks and the admin endpoint); a
/// larger explicit value is kept, and the warning returned says so.
std::string fit_open_files_limit(std::size_t& maxConnections) {
  constexpr rlim_t kReserved = 64;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return {};
  if (lim.rlim_cur != lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  if (lim.rlim_cur == RLIM_INFINITY) return {};
  const std::size_t fits =
      lim.rlim_cur > kReserved + 2 ? static_cast<std::size_t>((lim.rlim_cur - kReserved) / 2) : 1;
  if (maxConnections == 0) {
    maxConnections = fits;
    return {};
  }
  if (maxConnections <= fits) return {};
  return "varanus: warning: maxConnections " + std::to_string(maxConnections) + " needs about " +
         std::to_string(maxConnections * 2 + kReserved) + " open files, the limit is " +
         std::to_string(lim.rlim_cur) +
         " (hard limit; raise it with `ulimit -n` or LimitNOFILE=): beyond about " +
         std::to_string(fits) + " connections, accepting pauses until some close";
}

/// The TLS contexts of both legs (null where the leg is plaintext), built
/// from the configured files; reload() on SIGHUP.
struct TlsContexts {
  std::shared_ptr<proxy::TlsContextHolder> server;    ///< drivers -> varanus
  std::shared_ptr<proxy::TlsContextHolder> upstream;  ///< varanus -> mongod

  /// Throws proxy::TlsError naming the file and the reason.
  explicit TlsContexts(const proxy::TlsConfig& tls) {
    if (tls.server.enabled()) server = proxy::TlsContextHolder::server(tls.server);
    if (tls.upstream.enabled) upstream = proxy::TlsContextHolder::client(tls.upstream);
  }
  bool any() const { return server || upstream; }
  /// One stderr line per leg: reloaded, or why not (the old files stay).
  void reload() const {
    for (const auto& [holder, leg] :
         {std::pair{server.get(), "client leg"}, std::pair{upstream.get(), "upstream leg"}}) {
      if (!holder) continue;
      if (auto why = holder->reload())
        diag(std::string("varanus: SIGHUP: TLS ") + leg +
             " not reloaded, keeping the previous certificates: " + *why);
      else
        diag(std::string("varanus: SIGHUP: TLS ") + leg + " certificates reloaded");
    }
  }
};

int run_proxy(const std::vector<std::string>& args) {
  app::Cli cli = app::parse_cli(args, app::varanus_environment());
  switch (cli.action) {
    case app::Cli::Action::help:
      std::fputs(app::usage().c_str(), stdout);
      return 0;
    case app::Cli::Action::version:
      std::fputs("varanus " VARANUS_VERSION "\n", stdout);
      return 0;
    case app::Cli::Action::error:
      diag(cli.error);
      return 2;
    case app::Cli::Action::run:
    case app::Cli::Action::check:
      break;
  }
  app::AppConfig& cfg = cli.config;
  app::SinkPlan plan;
  try {
    plan = app::plan_sinks(cfg.sinks, cli.sinkFlags, cfg.maxDocumentLength);
  } catch (const app::SinkConfigError& e) {
    diag(std::string("varanus: ") + e.what());
    return 2;
  }
  // The certificates and keys are read now: a bad one is a configuration
  // error naming the file (--check-config says the same).
  std::optional<TlsContexts> tls;
  try {
    tls.emplace(cfg.proxy.tls);
  } catch (const proxy::TlsError& e) {
    diag(std::string("varanus: ") + e.what());
    return 2;
  }
  if (cli.action == app::Cli::Action::check) {
    // Each value, then where it came from: a flag, a VARANUS_* variable,
    // the config file, or the default.
    const auto& p = cfg.proxy;
    const std::pair<const char*, std::string> values[] = {
        {"listen", p.listen.to_string()},
        {"upstream", cfg.upstream.to_string()},
        {"ioThreads", std::to_string(p.ioThreads)},
        {"busyPollMicros", std::to_string(p.busyPoll.count())},
        {"gracePeriodSeconds", seconds(p.gracePeriod)},
        {"connectTimeoutSeconds", seconds(p.connectTimeout)},
        {"maxConnections", std::to_string(p.maxConnections)},
        {"halfCloseTimeoutSeconds", seconds(p.halfCloseTimeout)},
        {"idleTimeoutSeconds", seconds(p.idleTimeout)},
        {"maxMessageSize", std::to_string(cfg.tracker.maxMessageSize)},
        {"maxDocumentLength", std::to_string(cfg.maxDocumentLength)},
        {"bufferSize", std::to_string(p.bufferSize)},
        {"captureDocuments", cfg.tracker.captureDocuments ? "true" : "false"},
        {"tlsCertFile",
         p.tls.server.certFile.empty() ? "(none: plaintext)" : p.tls.server.certFile},
        {"tlsKeyFile", p.tls.server.keyFile.empty() ? "(none)" : p.tls.server.keyFile},
        {"tlsCAFile",
         p.tls.server.caFile.empty() ? "(none: no client certificates)" : p.tls.server.caFile},
        {"tlsMinVersion", proxy::to_string(p.tls.server.minVersion)},
        {"upstreamTls", p.tls.upstream.enabled ? "true" : "false"},
        {"upstreamTlsCAFile",
         p.tls.upstream.caFile.empty() ? "(none: the system store)" : p.tls.upstream.caFile},
        {"upstreamTlsCertFile",
         p.tls.upstream.certFile.empty() ? "(none)" : p.tls.upstream.certFile},
        {"upstreamTlsKeyFile", p.tls.upstream.keyFile.empty() ? "(none)" : p.tls.upstream.keyFile},
        {"upstreamTlsInsecure", p.tls.upstream.insecure ? "true" : "false"},
    };
    if (!cli.configPath.empty())
      std::printf("config file %s (%s)\n", cli.configPath.c_str(), cli.source("config").c_str());
    for (const auto& [key, value] : values)
      std::printf("%s %s (%s)\n", key, value.c_str(), cli.source(key).c_str());
    for (const auto& line : plan.describe()) std::printf("%s\n", line.c_str());
    for (const auto& name : cli.unknownEnv)
      std::printf("ignored: %s names no option of varanus\n", name.c_str());
    if (const auto why = app::unsupported_upstream(cfg.upstream); !why.empty()) {
      std::fflush(stdout);
      diag("varanus: " + why);
      return 2;
    }
    return 0;
  }
  if (const auto why = app::unsupported_upstream(cfg.upstream); !why.empty()) {
    diag("varanus: " + why);
    return 2;
  }

  if (cfg.proxy.tls.upstream.enabled && cfg.proxy.tls.upstream.insecure)
    diag(
        "varanus: warning: --upstream-tls-insecure: the upstream's certificate and host name are "
        "not verified");

  // A driver or a pipe reader going away must be an error code, not a kill.
  std::signal(SIGPIPE, SIG_IGN);
  const std::string limitWarning = fit_open_files_limit(cfg.proxy.maxConnections);

  monitor::Stats stats;
  // In front of a replica set or several mongos: varanus's own topology
  // monitor (SDAM events, listeners for the members it discovers, health).
  std::unique_ptr<proxy::TopologyMonitor> topology;
  if (cfg.proxy.members.enabled) {
    proxy::TopologyMonitorConfig tc;
    tc.seeds = cfg.proxy.members.seeds;
    tc.setName = cfg.upstream.replicaSet;
    tc.heartbeatFrequency = cfg.upstream.heartbeatFrequency.value_or(std::chrono::seconds(10));
    tc.connectTimeout = cfg.proxy.connectTimeout;
    // The upstream leg's TLS, as loaded at start (SIGHUP reloads the
    // relay's; the monitor keeps its connections' context).
    if (tls->upstream) tc.tls = tls->upstream->get();
    try {
      topology = std::make_unique<proxy::TopologyMonitor>(std::move(tc));
    } catch (const std::exception& e) {
      diag(std::string("varanus: upstream ") + cfg.upstream.to_string() + ": " + e.what());
      return 2;
    }
  }
  sinks::HealthCheck health =
      sinks::tcp_health_check(cfg.proxy.upstream.host, cfg.proxy.upstream.port);
  if (topology) {
    // Healthy while the deployment can take writes, as the monitor saw it
    // last: no connection of its own.
    health = [t = topology.get()]() -> std::pair<bool, std::string> {
      const auto d = t->description();
      const std::string type(monitor::sdam::to_string(d.type));
      if (auto p = d.primary()) return {true, type + ", primary " + *p};
      if (d.type == monitor::sdam::TopologyType::Sharded) {
        for (const auto& [address, sd] : d.servers)
          if (sd.type == monitor::sdam::ServerType::Mongos)
            return {true, type + ", mongos " + address};
        return {false, type + ": no mongos reachable"};
      }
      if (d.type == monitor::sdam::TopologyType::Single && !d.servers.empty() &&
          d.servers.begin()->second.type != monitor::sdam::ServerType::Unknown)
        return {true, type};
      return {false, type + ": no primary"};
    };
  }
  std::optional<app::SinkRuntime> sinkRuntime;
  std::string adminAddress;
  try {
    sinkRuntime.emplace(plan, stats, std::move(health), [](std::string_view line) { diag(line); });
    adminAddress = sinkRuntime->start();
  } catch (const std::exception& e) {
    diag(std::string("varanus: ") + e.what());
    return 1;
  }
  monitor::EventOutput& events = sinkRuntime->dispatcher();

  // Copy into events only what the sinks can show: nothing when no sink
  // renders documents, a bounded prefix when every rendering is bounded.
  monitor::TrackerOptions tracking = cfg.tracker;
  if (const auto bound = sinkRuntime->dispatcher().document_bound()) {
    tracking.documentBound = *bound;
  } else {
    tracking.captureDocuments = false;
  }
  tracking.replySummary = sinkRuntime->dispatcher().wants_reply_summary();
  proxy::Server server(cfg.proxy, events, stats, proxy::tracker_factory(tracking));
  server.use_tls(tls->server, tls->upstream);
  proxy::Endpoint bound;
  try {
    bound = server.start();
  } catch (const std::system_error& e) {
    diag("varanus: cannot listen on " + cfg.proxy.listen.to_string() + ": " + e.code().message());
    return 1;
  } catch (const std::exception& e) {
    diag("varanus: cannot listen on " + cfg.proxy.listen.to_string() + ": " + e.what());
    return 1;
  }

  // Signals are handled on a thread of their own, installed before the
  // start-up line so that a script may signal as soon as it has read it.
  boost::asio::io_context signalContext(1);
  boost::asio::signal_set signals(signalContext, SIGINT, SIGTERM, SIGHUP);
  int stopSignals = 0;
  // When the first stop signal came: the grace period bounds the sinks'
  // final flush too (a stdout reader that stopped must not hold up exit).
  std::atomic<std::int64_t> stopAt{0};
  std::function<void(const boost::system::error_code&, int)> onSignal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          sinkRuntime->reopen();
          tls->reload();
          // The expiry gauge follows the certificate now served.
          if (tls->server) {
            if (const auto left = tls->server->get()->seconds_until_expiry())
              stats.tlsCertificateNotAfter.store(std::time(nullptr) + *left);
          }
        } else if (++stopSignals == 1) {
          diag(std::string("varanus: ") + (signo == SIGINT ? "SIGINT" : "SIGTERM") +
               ": stopping, grace period " + seconds(cfg.proxy.gracePeriod) +
               " s (signal again to exit at once)");
          stopAt.store(std::chrono::steady_clock::now().time_since_epoch().count());
          server.stop(cfg.proxy.gracePeriod);
        } else {
          diag("varanus: second signal: exiting now");
          // What is queued and rendered goes out where it can without
          // waiting (sink writes never block), at most 0.2 s.
          sinkRuntime->emergency_flush(std::chrono::steady_clock::now() +
                                       std::chrono::milliseconds(200));
          std::_Exit(128 + signo);
        }
        signals.async_wait(onSignal);
      };
  signals.async_wait(onSignal);
  std::thread signalThread([&] { signalContext.run(); });

  diag("varanus: listening on " + bound.to_string() + ", upstream " +
       (cfg.proxy.members.enabled ? cfg.upstream.to_string() : cfg.proxy.upstream.to_string()));
  if (topology) {
    topology->on_event([&events](const monitor::sdam::TopologyEvent& e) {
      events.publish(monitor::topology_event(e, std::chrono::system_clock::now()));
    });
    topology->on_server_opened([&server](const std::string& member) {
      try {
        server.add_member(member);
      } catch (const std::exception& e) {
        diag("varanus: no listener for member " + member + ": " + e.what());
      }
    });
    topology->on_server_closed(
        [&server](const std::string& member) { server.remove_member(member); });
    topology->via([&server] {
      const auto m = server.member_addresses();
      return monitor::sdam::ViaMap(m.begin(), m.end());
    });
    topology->start();
  }
  if (!adminAddress.empty()) {
    diag("varanus: admin endpoint on http://" + adminAddress);
    // Loopback unless an address was given: one beyond it was asked for,
    // and is said, since the endpoint has no authentication.
    if (!loopback_address(adminAddress))
      diag("varanus: warning: the admin endpoint " + adminAddress +
           " is reachable from other machines and needs no authentication (/metrics, /stats "
           "name databases, collections and clients); bind it to 127.0.0.1 unless a "
           "firewall or container network limits who reaches it");
  }
  if (!limitWarning.empty()) diag(limitWarning);

  int status = 0;
  try {
    server.run();
  } catch (const std::exception& e) {
    diag(std::string("varanus: fatal: ") + e.what());
    status = 1;
  }
  // serverClosed per member, then topologyClosed: published before the
  // sinks' last flush.
  if (topology) topology->stop();
  // Every event published so far reaches its sinks, their writes ending
  // with the grace period (at least 0.5 s from now); what a stuck reader
  // has not taken by then is dropped, counted and said on stderr.
  std::optional<std::chrono::steady_clock::time_point> flushDeadline;
  if (const std::int64_t at = stopAt.load(); at != 0) {
    const auto now = std::chrono::steady_clock::now();
    flushDeadline =
        std::max(std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(at)) +
                     cfg.proxy.gracePeriod,
                 now + std::chrono::milliseconds(500));
  }
  sinkRuntime->stop(flushDeadline);

  signals.cancel();
  signalContext.stop();
  signalThread.join();
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "decode") {
    return varanus::app::run_decode(argc - 1, argv + 1);
  }
  if (argc >= 2 && std::string_view(argv[1]) == "healthcheck") {
    return varanus::app::run_healthcheck(std::vector<std::string>(argv + 2, argv + argc));
  }
  if (argc >= 2 && std::string_view(argv[1]) == "top") {
    return varanus::app::run_top(argc - 1, argv + 1);
  }
  if (argc >= 2 && std::string_view(argv[1]) == "replay") {
    return varanus::app::run_replay(argc - 1, argv + 1);
  }
  if (argc >= 2 && std::string_view(argv[1]) == "sniff") {
    return varanus::app::run_sniff(argc - 1, argv + 1);
  }
  try {
    return run_proxy(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    diag(std::string("varanus: fatal: ") + e.what());
    return 1;
  }
}
