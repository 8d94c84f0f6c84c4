// varanus-bench — the load generator: MongoDB wire messages built with the
// project's builders (varanus::wire::build_op_msg / build_op_query), sent
// over raw sockets on 127.0.0.1 (or TLS over them: use_tls). No driver: a driver's own cost would
// hide the proxies' differences. One client thread; an epoll loop drives the many-connection
// workloads. Every loop is bounded in count and in time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace varanus::proxy {
class TlsContext;
}

namespace varanus::bench {

using Bytes = std::vector<std::uint8_t>;
using Seconds = std::chrono::duration<double>;

/// Prebuilt request frames; the benchmark patches requestID and _id values
/// in place instead of rebuilding them.
struct Requests {
  Bytes ping;  ///< OP_MSG {ping: 1, $db: "admin"}
  Bytes
      isMaster;  ///< OP_QUERY admin.$cmd {isMaster: 1, helloOk: true, client: {...}}, as libmongoc
  Bytes find;    ///< OP_MSG {find: "small", filter: {_id: K}, limit: 1, singleBatch: true, lsid}
  std::size_t findKeyOffset = 0;
  Bytes insert;  ///< OP_MSG {insert: "mix", ordered, lsid} + kind-1 documents [{_id: N, ...~100 B}]
  std::size_t insertIdOffset = 0;

  static Requests make();
};

/// From now on every connection the client opens speaks TLS with this
/// client context (varanus::proxy::TlsConn, non-blocking OpenSSL; the peer's
/// name 127.0.0.1 verified; no session resumption: a full handshake each).
/// nullptr: plaintext again. (e) and the 48 MB message stay plaintext-only.
void use_tls(std::shared_ptr<const proxy::TlsContext> ctx);
bool tls_enabled();

/// Patches the requestID of a frame.
void set_request_id(Bytes& frame, std::int32_t id);
/// Writes a little-endian int64 at `offset`.
void put_i64(Bytes& frame, std::size_t offset, std::int64_t v);

/// Counts of one timed window.
struct Window {
  std::uint64_t ops = 0;       ///< commands (or connections, for churn) completed in the window
  std::uint64_t commands = 0;  ///< wire commands completed in the window
  std::uint64_t bytes = 0;     ///< payload bytes (request bytes for inserts, reply bytes for reads)
  double seconds = 0;
  double cpuSeconds = -1;       ///< CPU of the measured process over the window (-1: not measured)
  double cpuMainSeconds = -1;   ///< of its main thread only (varanus: its one I/O thread)
  std::uint64_t completed = 0;  ///< all replies received, the drain after the window included
  std::uint64_t errors = 0;
  std::string firstError;
};

/// Adds the counts of `w` to `into` (several windows of one target taken as
/// one: seconds, operations, CPU add up).
void add(Window& into, const Window& w);

/// Loads the collections the workloads read: bench.small (100 tiny docs)
/// and bench.read10k (10,000 docs of ~1 KiB). Direct to the stub.
bool seed(std::uint16_t stubPort, std::string* error);
/// {drop: coll} on db "bench" (missing collections are fine).
bool drop(std::uint16_t port, const std::string& coll);

/// (a) one connection, sequential ping: one latency sample (µs) per ping.
std::vector<double> ping_latency(std::uint16_t port, std::size_t maxCount, Seconds maxTime,
                                 Window* w);
/// (a) as above, but kept open so that targets can take turns in short
/// slices: with the machine's drift shared alike by every target, latency
/// differences of a few µs show through noise of tens.
class PingConnection {
 public:
  PingConnection() = default;
  PingConnection(const PingConnection&) = delete;
  PingConnection& operator=(const PingConnection&) = delete;
  PingConnection(PingConnection&& o) noexcept;
  ~PingConnection();
  /// Connects, handshakes (isMaster) and sends 200 warm-up pings.
  bool open(std::uint16_t port, Window* w);
  /// Pings for `slice` (at most `maxCount` samples); appends µs per ping.
  void run(Seconds slice, std::size_t maxCount, std::vector<double>& out, Window* w);
  void close();
  bool is_open() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
  Requests req_;
  Bytes reply_;
  std::int32_t id_ = 1000;
};

/// (b) `conns` connections, one command in flight each, find/insert alternating.
Window mix(std::uint16_t port, int conns, Seconds duration, std::uint64_t maxOps, pid_t cpuPid);
/// (c) one connection, sequential inserts of one document of `docBytes`.
Window big_inserts(std::uint16_t port, std::size_t docBytes, Seconds duration,
                   std::uint64_t maxCount, pid_t cpuPid);
/// (d) one connection: find + getMore (batchSize 1000) over bench.read10k,
/// repeated. bytes = reply bytes.
Window read_back(std::uint16_t port, Seconds duration, std::uint64_t maxScans, pid_t cpuPid);
/// (f) `concurrency` slots each looping connect, isMaster, ping, close.
Window churn(std::uint16_t port, int concurrency, Seconds duration, std::uint64_t maxConns,
             pid_t cpuPid);
/// (e) opens `n` connections, each doing its isMaster handshake, and leaves
/// them open: returns their descriptors (fewer on error or timeout).
std::vector<int> open_idle(std::uint16_t port, int n, Seconds timeout, std::string* error);
void close_all(std::vector<int>& fds);
/// One insert message of about `totalBytes` (documents of at most ~15.9 MB
/// in a kind-1 sequence), then its reply. Returns the bytes sent, 0 on error.
std::size_t one_huge_insert(std::uint16_t port, std::size_t totalBytes, std::string* error);

}  // namespace varanus::bench
