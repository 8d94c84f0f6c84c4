// varanus::wire — finding and rewriting the hello replies of one relayed
// connection, as its bytes pass.
//
// In front of a replica set the relay must hand drivers hello replies that
// name varanus's listeners (hello_rewrite.hpp), and nothing else may change.
// A HelloReplyStream follows both directions of one connection with the
// least work that allows: on the client's side it reads only the first
// bytes of each request (opcode, requestID, the command's first key) and
// remembers the requestIDs of hello / isMaster requests; on the upstream's
// side it reads each reply's header and holds back only a reply that
// answers one of them (or continues a streamed, exhaust hello: moreToCome
// replies answer the previous reply's requestID) until it is whole, then
// hands back the rewritten frame. Every other byte passes through as it
// came, uncopied.
//
// Not looked at: requests inside OP_COMPRESSED (the specifications forbid
// compressing hello and isMaster, and mongod answers them uncompressed; a
// compressed hello reply to a plain request is still rewritten). A stream
// that does not frame (a messageLength below 16 or above the maximum) stops
// the rewriting for good: from then on everything passes through.
//
// Pure: bytes in, bytes out; the caller supplies the address map.
// tests/wire/hello_stream_test.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "varanus/wire/hello_rewrite.hpp"

namespace varanus::wire {

class HelloReplyStream {
 public:
  explicit HelloReplyStream(std::int32_t maxMessageSize = kDefaultMaxMessageSize)
      : maxMessageSize_(maxMessageSize) {}

  /// The client's bytes, in order, as relayed (any chunking).
  void client_bytes(std::span<const std::uint8_t> bytes);

  /// The member -> advertised address map. Called once per hello reply
  /// with no addresses, and again with the addresses the reply names that
  /// the map lacked (the caller opens listeners for them first).
  using Addresses = std::function<AddressMap(const std::vector<std::string>& unknown)>;

  struct Output {
    /// Forward the input as it came: nothing held back, nothing rewritten.
    bool unchanged = true;
    /// Else: what to forward now, in place of the input (possibly empty: a
    /// hello reply is still arriving, or a header is not whole yet).
    std::vector<std::uint8_t> bytes;
    /// Hello replies forwarded rewritten in this call.
    std::size_t rewritten = 0;
  };
  /// The upstream's bytes, in order.
  Output server_bytes(std::span<const std::uint8_t> bytes, const Addresses& addresses);

  /// Bytes held back and not yet forwarded (a reply still arriving when the
  /// upstream closed): forward them as they are. Clears them.
  std::vector<std::uint8_t> take_held();

  /// The stream stopped rewriting (it did not frame); `why` says how.
  bool passthrough() const noexcept { return passthrough_; }
  const std::string& why() const noexcept { return why_; }

  /// requestIDs of hello requests (and streamed hello replies) whose reply
  /// has not come yet. For tests.
  const std::vector<std::int32_t>& awaiting() const noexcept { return helloIds_; }

 private:
  void classify_request();
  void remember(std::int32_t requestId);
  bool answers_hello(std::int32_t responseTo);
  void stop(std::string why);

  std::int32_t maxMessageSize_;
  bool passthrough_ = false;
  std::string why_;
  std::vector<std::int32_t> helloIds_;

  // Client side: the first bytes of the current request, then a skip.
  std::vector<std::uint8_t> peek_;
  std::size_t peekWanted_ = 0;  // bytes of the current request to peek at (0: at a frame start)
  std::size_t clientSkip_ = 0;  // bytes of the current request left to pass

  // Upstream side.
  std::vector<std::uint8_t> header_;  // a reply header not yet whole (held back)
  std::size_t serverSkip_ = 0;        // bytes of a passing reply left
  std::vector<std::uint8_t> frame_;   // a hello reply being held
  std::size_t frameLength_ = 0;
};

}  // namespace varanus::wire
