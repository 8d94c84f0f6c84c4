// varanus-stub — each member's listener and connections, so a member can be
// stopped like a killed mongod (listener closed: connects refused; its
// connections closed), started again on the same port, and new members
// added on new ports ({stubStopMember}, {stubStartMember}, {stubAddMember}).
//
// Admin commands call in from any member's I/O thread; one mutex orders
// them (and Topology's changes, taken inside it, so they apply in the order
// the commands ran). Sockets are only ever shut down (::shutdown) from a
// foreign thread: closing and every asynchronous operation stay on the
// owning io_context, as Boost.Asio requires.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "match.hpp"

namespace varanus::stub {

class Session;
struct ServerState;

class Members {
 public:
  using Contexts = std::vector<std::unique_ptr<boost::asio::io_context>>;

  /// address: where members listen. consecutive: the set was started on a
  /// fixed port, so a member added without a port takes the port after the
  /// highest member's (else a free port). tls: every listener serves TLS.
  Members(Contexts& contexts, boost::asio::ip::address address, bool consecutive,
          boost::asio::ssl::context* tls);
  ~Members();
  Members(const Members&) = delete;
  Members& operator=(const Members&) = delete;

  /// Binds the next initial member's listener on `port` (0 = a free port),
  /// before the state exists. Returns its "host:port", or nullopt with the
  /// reason in `error`.
  std::optional<std::string> bind_initial(std::uint16_t port, std::string& error);

  /// Starts accepting on every listener bound so far; the state's admin
  /// commands reach this object through state.members from now on.
  void serve(ServerState& state);

  /// {stubAddMember}: a listener for a new member (port 0 = a free port; no
  /// port: see the constructor), then Topology::add. Returns "host:port".
  std::variant<std::string, CommandError> add(std::optional<std::uint16_t> port);
  /// {stubStopMember}: listener closed (new connects refused), connections
  /// closed, then Topology::stop. All done when this returns.
  std::optional<CommandError> stop(int member);
  /// {stubStartMember}: listening again on the member's own port, then Topology::start.
  std::optional<CommandError> start(int member);

  /// At exit, the contexts stopped: closes every listener on this thread.
  void close_all();

 private:
  struct Listener;
  struct Slot;

  boost::asio::awaitable<void> accept_loop(std::shared_ptr<Listener> listener, int member,
                                           std::uint64_t generation);
  /// Records a new connection of `member`; false when the member was stopped
  /// (or restarted) since that accept loop began: the connection is dropped.
  bool admit(int member, std::uint64_t generation, const std::shared_ptr<Session>& session);
  /// A listening acceptor on `endpoint` in member's context, or an error.
  std::variant<std::shared_ptr<Listener>, CommandError> listen_locked(
      int member, const boost::asio::ip::tcp::endpoint& endpoint);
  void spawn_locked(int member);

  Contexts& contexts_;
  boost::asio::ip::address address_;
  bool consecutive_;
  boost::asio::ssl::context* tls_;
  ServerState* state_ = nullptr;
  std::mutex mu_;
  std::vector<Slot> slots_;
};

}  // namespace varanus::stub
