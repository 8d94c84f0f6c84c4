// Embedding varanus: a program of your own that runs the proxy and receives
// its events in a sink of your own (here CountPerAppSink), like an
// application registering a PyMongo CommandListener — but for every
// application behind the proxy at once.
//
//   embed_proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:27017 [--out counts.json]
//
// Prints "embed_proxy: listening on HOST:PORT" on stderr; on SIGINT/SIGTERM
// stops, then prints the commands counted per appName on stdout (and writes
// them to --out as JSON).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "count_per_app_sink.hpp"
#include "varanus/proxy/server.hpp"
#include "varanus/sinks/dispatcher.hpp"

int main(int argc, char** argv) {
  varanus::proxy::ProxyConfig config;
  config.gracePeriod = std::chrono::seconds(2);
  std::string out;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--listen" || flag == "--upstream") {
      auto ep = varanus::proxy::Endpoint::parse(value);
      if (!ep) {
        std::fprintf(stderr, "embed_proxy: %s: expected HOST:PORT\n", argv[i]);
        return 2;
      }
      (flag == "--listen" ? config.listen : config.upstream) = *ep;
    } else if (flag == "--out") {
      out = value;
    } else {
      std::fprintf(stderr, "usage: embed_proxy --listen H:P --upstream H:P [--out FILE]\n");
      return 2;
    }
  }

  // Signals are taken by one thread with sigwait: block them everywhere
  // first (threads inherit the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // 1. The Dispatcher, with your sinks (they run on its sink thread).
  varanus::monitor::Stats stats;
  varanus::sinks::Dispatcher dispatcher(stats);
  auto counter = std::make_shared<example::CountPerAppSink>(out);
  dispatcher.add(counter);
  dispatcher.start();

  // 2. The proxy, publishing into the Dispatcher.
  varanus::proxy::Server server(config, dispatcher, stats, varanus::proxy::tracker_factory());
  const auto bound = server.start();
  std::fprintf(stderr, "embed_proxy: listening on %s\n", bound.to_string().c_str());

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    server.stop();
  });
  server.run();                                   // until a signal stops it
  pthread_kill(waiter.native_handle(), SIGTERM);  // in case run() ended on its own
  waiter.join();

  // 3. Drain: every event reaches the sinks; close() writes --out.
  dispatcher.stop();
  for (const auto& [app, n] : counter->counts())
    std::printf("%s\t%llu\n", app.c_str(), static_cast<unsigned long long>(n));
  return 0;
}
