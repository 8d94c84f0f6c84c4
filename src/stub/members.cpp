#include "members.hpp"

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <exception>

#include "session.hpp"
#include "state.hpp"

namespace varanus::stub {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

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

}  // namespace

/// One bound acceptor; shared by its slot and its accept loop.
struct Members::Listener {
  explicit Listener(asio::io_context& ctx) : acceptor(ctx) {}
  tcp::acceptor acceptor;
  std::mutex mu;         ///< orders shut() (any thread) against close() (its thread)
  bool closing = false;  ///< shut(): the accept loop ends

  bool is_closing() {
    std::lock_guard lock(mu);
    return closing;
  }
  /// Any thread: refuse new connections now (on Linux, shutdown() takes a
  /// listening socket out of LISTEN: connects get RST, the pending accept
  /// fails), then close the acceptor on its own thread.
  static void shut(const std::shared_ptr<Listener>& self) {
    {
      std::lock_guard lock(self->mu);
      if (self->closing) return;
      self->closing = true;
      if (self->acceptor.is_open()) ::shutdown(self->acceptor.native_handle(), SHUT_RDWR);
    }
    asio::post(self->acceptor.get_executor(), [self] {
      std::lock_guard lock(self->mu);
      boost::system::error_code ignored;
      self->acceptor.close(ignored);
    });
  }
};

struct Members::Slot {
  tcp::endpoint endpoint;              ///< where the member listens (again after a restart)
  std::shared_ptr<Listener> listener;  ///< null while stopped
  std::uint64_t generation = 0;        ///< + 1 at each stop and start
  std::vector<std::weak_ptr<Session>> sessions;
};

Members::Members(Contexts& contexts, asio::ip::address address, bool consecutive,
                 asio::ssl::context* tls)
    : contexts_(contexts), address_(std::move(address)), consecutive_(consecutive), tls_(tls) {}

Members::~Members() = default;

std::variant<std::shared_ptr<Members::Listener>, CommandError> Members::listen_locked(
    int member, const tcp::endpoint& endpoint) {
  auto& ctx = *contexts_[static_cast<std::size_t>(member) % contexts_.size()];
  auto l = std::make_shared<Listener>(ctx);
  boost::system::error_code ec;
  l->acceptor.open(endpoint.protocol(), ec);
  if (!ec) l->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) l->acceptor.bind(endpoint, ec);
  if (!ec) l->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return CommandError{9001, "SocketException",
                        "cannot listen on " + format_endpoint(endpoint) + ": " + ec.message()};
  }
  return l;
}

std::optional<std::string> Members::bind_initial(std::uint16_t port, std::string& error) {
  std::lock_guard lock(mu_);
  int member = static_cast<int>(slots_.size());
  auto bound = listen_locked(member, tcp::endpoint(address_, port));
  if (auto* e = std::get_if<CommandError>(&bound)) {
    error = e->errmsg;
    return std::nullopt;
  }
  Slot slot;
  slot.listener = std::move(std::get<0>(bound));
  slot.endpoint = slot.listener->acceptor.local_endpoint();
  slots_.push_back(std::move(slot));
  return format_endpoint(slots_.back().endpoint);
}

void Members::serve(ServerState& state) {
  std::lock_guard lock(mu_);
  state_ = &state;
  state.members = this;
  for (std::size_t m = 0; m < slots_.size(); ++m) spawn_locked(static_cast<int>(m));
}

void Members::spawn_locked(int member) {
  Slot& slot = slots_[static_cast<std::size_t>(member)];
  // co_spawn posts to the acceptor's executor: safe from any thread.
  asio::co_spawn(slot.listener->acceptor.get_executor(),
                 accept_loop(slot.listener, member, slot.generation), log_exception);
}

asio::awaitable<void> Members::accept_loop(std::shared_ptr<Listener> listener, int member,
                                           std::uint64_t generation) {
  tcp::acceptor& acceptor = listener->acceptor;
  std::size_t next = static_cast<std::size_t>(member);
  for (;;) {
    asio::io_context& target = *contexts_[next++ % contexts_.size()];
    auto [ec, socket] = co_await acceptor.async_accept(target, nothrow);
    if (ec == asio::error::operation_aborted || !acceptor.is_open() || listener->is_closing()) {
      co_return;
    }
    if (ec) {
      // Out of descriptors and the like: back off instead of spinning.
      std::fprintf(stderr, "varanus-stub: accept: %s\n", ec.message().c_str());
      asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await t.async_wait(nothrow);
      continue;
    }
    auto session = std::make_shared<Session>(std::move(socket), *state_, member, tls_);
    if (!admit(member, generation, session)) co_return;  // stopped meanwhile: dropped
    asio::co_spawn(target, Session::run(std::move(session)), log_exception);
  }
}

bool Members::admit(int member, std::uint64_t generation, const std::shared_ptr<Session>& session) {
  std::lock_guard lock(mu_);
  Slot& slot = slots_[static_cast<std::size_t>(member)];
  if (slot.generation != generation || !slot.listener) return false;
  if (slot.sessions.size() >= 64) {
    std::erase_if(slot.sessions, [](const auto& w) { return w.expired(); });
  }
  slot.sessions.push_back(session);
  return true;
}

std::variant<std::string, CommandError> Members::add(std::optional<std::uint16_t> port) {
  std::lock_guard lock(mu_);
  Topology& topo = state_->topology;
  if (std::size_t n = topo.hosts().size(); n >= Topology::kMaxMembers) {
    // As mongod words its reconfig check.
    return CommandError{103, "NewReplicaSetConfigurationIncompatible",
                        "Replica set configuration contains " + std::to_string(n + 1) +
                            " members, but must be less than or equal to " +
                            std::to_string(Topology::kMaxMembers)};
  }
  std::uint16_t chosen = 0;
  if (port) {
    chosen = *port;
  } else if (consecutive_) {
    for (const auto& s : slots_) chosen = std::max<std::uint16_t>(chosen, s.endpoint.port());
    if (chosen == 65535) {
      return CommandError{9001, "SocketException", "no port after 65535 for a new member"};
    }
    ++chosen;
  }
  for (const auto& s : slots_) {
    if (chosen != 0 && s.endpoint.port() == chosen) {
      return CommandError{2, "BadValue",
                          "port " + std::to_string(chosen) + " belongs to member " +
                              format_endpoint(s.endpoint) + " already"};
    }
  }
  int member = static_cast<int>(slots_.size());
  auto bound = listen_locked(member, tcp::endpoint(address_, chosen));
  if (auto* e = std::get_if<CommandError>(&bound)) return *e;
  Slot slot;
  slot.listener = std::move(std::get<0>(bound));
  slot.endpoint = slot.listener->acceptor.local_endpoint();
  std::string host = format_endpoint(slot.endpoint);
  slots_.push_back(std::move(slot));
  int index = topo.add(host);
  (void)index;  // == member: only this object adds members, under mu_
  spawn_locked(member);
  std::fprintf(stderr, "varanus-stub: member %s added to %s\n", host.c_str(),
               topo.set_name().c_str());
  return host;
}

std::optional<CommandError> Members::stop(int member) {
  std::lock_guard lock(mu_);
  Slot& slot = slots_[static_cast<std::size_t>(member)];
  std::string host = format_endpoint(slot.endpoint);
  if (!slot.listener) {
    return CommandError{20, "IllegalOperation", "member " + host + " is stopped already"};
  }
  ++slot.generation;
  Listener::shut(slot.listener);
  slot.listener.reset();
  state_->topology.stop(member);
  for (auto& weak : slot.sessions) {
    if (auto s = weak.lock()) s->kill();
  }
  slot.sessions.clear();
  std::fprintf(stderr, "varanus-stub: member %s stopped\n", host.c_str());
  return std::nullopt;
}

std::optional<CommandError> Members::start(int member) {
  std::lock_guard lock(mu_);
  Slot& slot = slots_[static_cast<std::size_t>(member)];
  std::string host = format_endpoint(slot.endpoint);
  if (slot.listener) {
    return CommandError{20, "IllegalOperation", "member " + host + " is running already"};
  }
  auto bound = listen_locked(member, slot.endpoint);
  if (auto* e = std::get_if<CommandError>(&bound)) return *e;
  slot.listener = std::move(std::get<0>(bound));
  ++slot.generation;
  state_->topology.start(member);
  spawn_locked(member);
  std::fprintf(stderr, "varanus-stub: member %s started\n", host.c_str());
  return std::nullopt;
}

void Members::close_all() {
  std::lock_guard lock(mu_);
  for (auto& slot : slots_) {
    if (!slot.listener) continue;
    std::lock_guard l(slot.listener->mu);
    slot.listener->closing = true;
    boost::system::error_code ignored;
    slot.listener->acceptor.close(ignored);
  }
}

}  // namespace varanus::stub
