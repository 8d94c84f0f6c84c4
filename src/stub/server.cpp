#include "server.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "members.hpp"
#include "state.hpp"

namespace varanus::stub {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
using Contexts = Members::Contexts;
}  // namespace

/// The TLS context of --tls-cert/--tls-key/--tls-ca; throws
/// std::runtime_error naming the file and the reason.
static std::unique_ptr<asio::ssl::context> make_tls_context(const Options& o) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  auto load = [](const char* what, const std::string& file, auto&& fn) {
    boost::system::error_code ec;
    fn(ec);
    if (ec) throw std::runtime_error(std::string("TLS ") + what + " " + file + ": " + ec.message());
  };
  load("certificate file", o.tlsCert,
       [&](boost::system::error_code& ec) { ctx->use_certificate_chain_file(o.tlsCert, ec); });
  const std::string& key = o.tlsKey.empty() ? o.tlsCert : o.tlsKey;
  load("key file", key, [&](boost::system::error_code& ec) {
    ctx->use_private_key_file(key, asio::ssl::context::pem, ec);
  });
  if (!o.tlsCa.empty()) {
    load("CA file", o.tlsCa,
         [&](boost::system::error_code& ec) { ctx->load_verify_file(o.tlsCa, ec); });
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

int run_server(const Options& options) {
  std::unique_ptr<asio::ssl::context> tls;
  if (!options.tlsCert.empty()) {
    try {
      tls = make_tls_context(options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "varanus-stub: %s\n", e.what());
      return 2;
    }
  }
  Contexts contexts;
  for (int i = 0; i < options.threads; ++i)
    contexts.push_back(std::make_unique<asio::io_context>(1));

  boost::system::error_code ec;
  std::string host = options.host == "localhost" ? "127.0.0.1" : options.host;
  asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) {
    std::fprintf(stderr, "varanus-stub: bad listen address '%s': %s\n", options.host.c_str(),
                 ec.message().c_str());
    return 2;
  }

  // Bind every member before announcing any, so a printed address always works.
  auto members = std::make_unique<Members>(contexts, address, options.port != 0, tls.get());
  std::vector<std::string> hosts;
  for (int m = 0; m < options.members; ++m) {
    auto port = static_cast<std::uint16_t>(options.port == 0 ? 0 : options.port + m);
    std::string error;
    auto bound = members->bind_initial(port, error);
    if (!bound) {
      std::fprintf(stderr, "varanus-stub: %s\n", error.c_str());
      return 1;
    }
    hosts.push_back(*bound);
  }

  auto state = std::make_unique<ServerState>(options, hosts);
  // Catch SIGTERM/SIGINT before announcing the address: whoever reads it may
  // stop us at once, and must get a clean exit.
  auto signals = std::make_unique<asio::signal_set>(*contexts[0], SIGINT, SIGTERM);
  signals->async_wait([&](const boost::system::error_code& err, int) {
    if (err) return;
    for (auto& ctx : contexts) ctx->stop();
  });

  for (const auto& h : hosts) std::printf("%s\n", h.c_str());
  std::fflush(stdout);
  if (options.replSet.empty()) {
    std::fprintf(stderr, "varanus-stub: %slistening on %s (%d threads%s)\n",
                 options.mongos ? "mongos " : "", hosts[0].c_str(), options.threads,
                 tls ? ", TLS" : "");
  } else {
    std::fprintf(stderr, "varanus-stub: replica set %s, %d members, primary %s (%d threads)\n",
                 options.replSet.c_str(), options.members, hosts[0].c_str(), options.threads);
  }

  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto& ctx : contexts) guards.push_back(asio::make_work_guard(*ctx));
  members->serve(*state);

  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < contexts.size(); ++i) {
    threads.emplace_back([&ctx = *contexts[i]] { ctx.run(); });
  }
  contexts[0]->run();
  for (auto& t : threads) t.join();

  // Sessions (coroutine frames owned by the contexts) refer to the state, and
  // the signal set and acceptors to their context: destroy them in order.
  // A pending accept holds a socket of another context: cancel the accepts and
  // let their handlers finish (the accept loops return) before any context dies.
  guards.clear();
  signals.reset();
  members->close_all();
  for (auto& ctx : contexts) {
    ctx->restart();
    ctx->poll();
  }
  members.reset();
  contexts.clear();
  std::fprintf(stderr, "varanus-stub: stopped\n");
  return 0;
}

}  // namespace varanus::stub
