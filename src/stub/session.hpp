// varanus-stub — one client connection.
//
// A session reads frames in order and answers each before reading the next
// (drivers pipeline only unacknowledged writes, which get no reply). Three
// kinds of request make the server speak more than once:
//
//   * streaming hello (OP_MSG hello/isMaster with topologyVersion +
//     maxAwaitTimeMS and exhaustAllowed): the reply waits up to
//     maxAwaitTimeMS or until the topology changes, carries moreToCome, and
//     the next one follows after another wait, forever, until the client
//     closes the connection;
//   * getMore with exhaustAllowed: batches with moreToCome until cursor id 0;
//   * legacy OP_QUERY with the Exhaust flag: OP_REPLY batches until cursor id 0.
//
// In each chain every reply has a new requestID and its responseTo is the
// previous reply's requestID (the first answers the request's requestID).
// A reply is compressed with its request's compressor, unless the command is
// one the compression spec exempts (hello, saslStart, ...).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "commands.hpp"
#include "state.hpp"
#include "varanus/wire/builder.hpp"
#include "varanus/wire/frame.hpp"

namespace varanus::stub {

class Session {
 public:
  /// tls: serve TLS on this connection (handshake first), else plaintext.
  Session(boost::asio::ip::tcp::socket socket, ServerState& state, int member,
          boost::asio::ssl::context* tls = nullptr);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Serves the connection until the client closes it or a fault closes it.
  /// Takes the session by value: the coroutine frame owns it from creation
  /// (a lazily started member coroutine would not keep `this` alive).
  static boost::asio::awaitable<void> run(std::shared_ptr<Session> self);

  /// Its member was stopped: the connection ends as a killed mongod's would
  /// (FIN now; a pending read sees end of file, a parked hello wakes, a
  /// later write fails). Thread-safe: called from another member's thread.
  void kill();

 private:
  boost::asio::awaitable<void> serve();
  // Each returns false when the connection must end.
  boost::asio::awaitable<bool> handle_frame(std::span<const std::uint8_t> frame);
  boost::asio::awaitable<bool> handle_op_msg(const wire::Message& m);
  boost::asio::awaitable<bool> handle_op_query(const wire::Message& m);
  boost::asio::awaitable<bool> handle_legacy_find(const wire::Message& m);
  boost::asio::awaitable<bool> handle_op_get_more(const wire::Message& m);
  boost::asio::awaitable<bool> stream_hello(const wire::Message& m, const CommandInput& in,
                                            bool exhaust);
  boost::asio::awaitable<bool> exhaust_get_more(const wire::Message& m, const CommandInput& in,
                                                Doc first, std::optional<wire::Compressor> c);

  /// Sends one reply after the fault delay, compressed with `c` if set.
  /// Returns the requestID it used, or nullopt when the write failed.
  boost::asio::awaitable<std::optional<std::int32_t>> send(wire::Frame frame,
                                                           std::optional<wire::Compressor> c);
  boost::asio::awaitable<void> sleep_for(std::chrono::milliseconds d);

  enum class Wake { timeout, topology, readable };
  /// Waits until `deadline`, a topology change (counter moves past
  /// `counter`), or the socket turns readable (the client closed or sent).
  boost::asio::awaitable<Wake> await_topology(std::int64_t counter,
                                              std::chrono::steady_clock::time_point deadline);

  /// While the member is hung ({stubHangMember}): waits until it is not.
  boost::asio::awaitable<void> wait_while_hung();

  FaultSettings faults() const;
  void close(bool reset);
  std::int32_t next_request_id();

  boost::asio::ip::tcp::socket socket_;
  /// The TLS layer over socket_ (null: plaintext).
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  ServerState& state_;
  SessionInfo info_;
  CommandContext ctx_;
  wire::FrameReader reader_;
  std::int64_t messages_ = 0;
  /// Orders close() (this session's thread) against kill() (any thread).
  std::mutex closeMu_;
};

}  // namespace varanus::stub
