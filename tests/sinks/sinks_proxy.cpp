// sinks_proxy: the proxy wired to the sinks exactly as the varanus
// executable wires them (SinkRuntime from src/app/sink_config), for the
// sinks' end-to-end tests (test_sinks_proxy.py) with a real driver.
//
//   sinks_proxy --listen H:P --upstream H:P [--sinks-config FILE]
//               [--log-file P] [--log-format F] [--admin H:P] [--plugin P]
//               [--max-document-length N]
//
// --sinks-config FILE holds {"sinks": ...} as in the config file.
// stderr: "listening on H:P", then "admin endpoint on H:P" when on.
// SIGHUP reopens files; SIGINT/SIGTERM stop, drain the events, exit 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "sink_config.hpp"
#include "varanus/proxy/server.hpp"

using namespace varanus;

int main(int argc, char** argv) {
  proxy::ProxyConfig config;
  config.gracePeriod = std::chrono::seconds(2);
  app::SinkFlags flags;
  nlohmann::json section;
  std::size_t maxDoc = 1000;
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string flag = argv[i], value = argv[i + 1];
      if (flag == "--listen" || flag == "--upstream") {
        auto ep = proxy::Endpoint::parse(value);
        if (!ep) throw std::runtime_error(flag + ": expected HOST:PORT");
        (flag == "--listen" ? config.listen : config.upstream) = *ep;
      } else if (flag == "--sinks-config") {
        std::ifstream in(value);
        section = nlohmann::json::parse(in).at("sinks");
      } else if (flag == "--max-document-length") {
        maxDoc = std::stoul(value);
      } else if (app::is_sink_flag(flag)) {
        app::apply_sink_flag(flags, flag, value);
      } else {
        throw std::runtime_error("unknown option " + flag);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sinks_proxy: %s\n", e.what());
    return 2;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  monitor::Stats stats;
  try {
    const app::SinkPlan plan = app::plan_sinks(section, flags, maxDoc);
    app::SinkRuntime sinks(plan, stats,
                           sinks::tcp_health_check(config.upstream.host, config.upstream.port));
    const std::string admin = sinks.start();
    proxy::Server server(config, sinks.dispatcher(), stats, proxy::tracker_factory());
    const auto bound = server.start();
    // The admin line first: a test that has read "listening on" knows both.
    if (!admin.empty()) std::fprintf(stderr, "sinks_proxy: admin endpoint on %s\n", admin.c_str());
    std::fprintf(stderr, "sinks_proxy: listening on %s\n", bound.to_string().c_str());
    std::thread waiter([&] {
      for (;;) {
        int sig = 0;
        sigwait(&signals, &sig);
        if (sig == SIGHUP) {
          sinks.reopen();
          continue;
        }
        server.stop();
        return;
      }
    });
    server.run();
    waiter.join();
    sinks.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sinks_proxy: %s\n", e.what());
    return 1;
  }
  return 0;
}
