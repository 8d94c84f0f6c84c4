#include "server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "session.hpp"
#include "state.hpp"

namespace varanus::stub {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

using Contexts = std::vector<std::unique_ptr<asio::io_context>>;

std::string format_endpoint(const tcp::endpoint& ep) {
  // Clients cannot connect to the unspecified address: name loopback instead.
  asio::ip::address a = ep.address();
  if (a.is_unspecified()) {
    a = a.is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                  : asio::ip::address(asio::ip::address_v4::loopback());
  }
  std::string host = a.to_string();
  if (a.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    std::fprintf(stderr, "varanus-stub: session ended by exception: %s\n", x.what());
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, Contexts& contexts, ServerState& state,
                                  int member, asio::ssl::context* tls) {
  std::size_t next = static_cast<std::size_t>(member);
  for (;;) {
    asio::io_context& target = *contexts[next++ % contexts.size()];
    auto [ec, socket] = co_await acceptor.async_accept(target, nothrow);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors and the like: back off instead of spinning.
      std::fprintf(stderr, "varanus-stub: accept: %s\n", ec.message().c_str());
      asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await t.async_wait(nothrow);
      continue;
    }
    auto session = std::make_shared<Session>(std::move(socket), state, member, tls);
    asio::co_spawn(target, Session::run(std::move(session)), log_exception);
  }
}

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
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<std::string> hosts;
  for (int m = 0; m < options.members; ++m) {
    int port = options.port == 0 ? 0 : options.port + m;
    tcp::endpoint ep(address, static_cast<asio::ip::port_type>(port));
    auto& ctx = *contexts[static_cast<std::size_t>(m) % contexts.size()];
    auto acceptor = std::make_unique<tcp::acceptor>(ctx);
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      std::fprintf(stderr, "varanus-stub: cannot listen on %s: %s\n", format_endpoint(ep).c_str(),
                   ec.message().c_str());
      return 1;
    }
    hosts.push_back(format_endpoint(acceptor->local_endpoint()));
    acceptors.push_back(std::move(acceptor));
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
  for (std::size_t m = 0; m < acceptors.size(); ++m) {
    asio::co_spawn(acceptors[m]->get_executor(),
                   accept_loop(*acceptors[m], contexts, *state, static_cast<int>(m), tls.get()),
                   log_exception);
  }

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
  for (auto& a : acceptors) {
    boost::system::error_code ignored;
    a->close(ignored);
  }
  for (auto& ctx : contexts) {
    ctx->restart();
    ctx->poll();
  }
  acceptors.clear();
  contexts.clear();
  std::fprintf(stderr, "varanus-stub: stopped\n");
  return 0;
}

}  // namespace varanus::stub
