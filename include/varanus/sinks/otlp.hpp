// varanus::sinks — OpenTelemetry traces: one span per command, exported
// over OTLP/HTTP with the JSON encoding (POST {endpoint}/v1/traces).
//
//   sink thread                               exporter thread (its own)
//   write_(): started -> remember start,      waits for 512 spans or 1 s,
//             terminal -> span JSON ──▶ bounded queue ──▶ POST batch (gzip optional),
//             (queue full: dropped, counted)    retries 429/502/503/504 and
//                                               connection errors with backoff
//
// The HTTP exchange (blocking sockets with timeouts) happens on the
// exporter's own thread, so a collector that never answers delays neither
// traffic (the I/O threads never see this sink) nor the other sinks (the
// sink thread only appends to the queue): spans that do not fit in the
// queue while the exporter waits are dropped and counted.
//
// Spans follow the OpenTelemetry database semantic conventions for MongoDB
// (kind CLIENT, db.system.name = mongodb, db.namespace, db.collection.name,
// db.operation.name, server.*, client.*, db.response.status_code and
// error.type on failure, status ERROR with the server's message). A command
// whose `comment` is a string holding a W3C traceparent
// ("00-<32 hex>-<16 hex>-<2 hex>", alone or as sqlcommenter's
// traceparent='...') becomes a child of that span, in that trace.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "varanus/sinks/sink.hpp"

namespace varanus::sinks {

/// A W3C trace context: ids as lowercase hex.
struct TraceParent {
  std::string traceId;  ///< 32 hex digits, not all zero
  std::string spanId;   ///< 16 hex digits, not all zero
  std::uint8_t flags = 0;
};

/// Finds a traceparent in a command's comment: the whole string
/// ("00-...-...-01") or a `traceparent='...'` item (sqlcommenter's form,
/// quotes optional, URL-encoded or not). nullopt when none or invalid.
std::optional<TraceParent> parse_traceparent(std::string_view comment) noexcept;

/// The collection a command names: the first element's string value for
/// most commands (find, insert, update, delete, aggregate, count, ...),
/// `collection` for getMore; "" when the command names none (aggregate: 1,
/// ping, hello).
std::string command_collection(std::string_view commandName, wire::BsonView command);

/// A parsed http://host:port/path URL (https is not supported).
struct HttpUrl {
  std::string host;
  std::uint16_t port = 80;
  std::string path;  ///< without a trailing '/', "" for the root
};
/// Parses "http://HOST[:PORT][/PATH]"; nullopt (and `error` set) otherwise.
std::optional<HttpUrl> parse_http_url(std::string_view url, std::string* error = nullptr);

struct OtlpOptions {
  /// Base URL: spans are POSTed to {endpoint}/v1/traces.
  std::string endpoint;
  /// Extra request headers (authentication for a SaaS collector).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string serviceName = "varanus";
  std::string serviceVersion;  ///< default: the library's version as the app sets it
  std::string instanceId;      ///< default: a random UUID per process
  std::string hostName;        ///< default: gethostname()
  /// Content-Encoding: gzip.
  bool gzip = false;
  /// Spans for handshake and heartbeat hellos too.
  bool includeHellos = false;
  /// db.query.text: the command, rendered as this sink's RenderOptions say
  /// (bounded by maxDocumentLength, `values` redaction honoured).
  bool queryText = false;
  /// Spans waiting for the exporter; more are dropped and counted.
  std::size_t maxQueueSpans = 2048;
  /// Spans per request, and the longest a span waits before its batch goes.
  std::size_t maxBatchSpans = 512;
  std::chrono::milliseconds batchDelay{1000};
  /// One request (connect + send + answer).
  std::chrono::milliseconds timeout{10'000};
  /// Retries of a batch (429/502/503/504 or no connection): the delay
  /// doubles from min to max (a Retry-After header is honoured up to max);
  /// after maxRetries the batch is dropped.
  std::chrono::milliseconds minBackoff{500};
  std::chrono::milliseconds maxBackoff{30'000};
  unsigned maxRetries = 5;
  /// At shutdown (close()), how long queued spans may still be sent; a
  /// request still in flight then is cancelled, the rest dropped (counted).
  std::chrono::milliseconds closeTimeout{2000};
  /// Commands started whose end is not seen yet, remembered for their span
  /// (start time, trace context); the oldest are forgotten beyond this.
  std::size_t maxPending = 65536;
};

/// Named "otlp:{endpoint}". Exports traces only: connection and topology
/// events are taken (written) and make no span.
class OtlpSink : public Sink {
  using clock_point = std::chrono::steady_clock::time_point;

 public:
  /// Throws std::invalid_argument on a bad endpoint. Starts the exporter
  /// thread; connects only when a batch is ready (the collector need not be
  /// up now).
  explicit OtlpSink(OtlpOptions options, RenderOptions render = {}, SinkFilter filter = {});
  ~OtlpSink() override;

  /// Needs the command's comment and first keys, as far as its rendering
  /// would show them.
  DocumentNeed document_need() const noexcept override { return DocumentNeed::rendered; }

  // Counters, any thread.
  std::uint64_t spans_sent() const noexcept { return sent_.load(std::memory_order_relaxed); }
  /// Spans lost: queue full, or their batch given up after retries or refused.
  std::uint64_t spans_dropped() const noexcept {
    return spansDropped_.load(std::memory_order_relaxed);
  }
  /// Requests that did not succeed (each attempt: refused, retryable, no answer).
  std::uint64_t posts_failed() const noexcept {
    return postsFailed_.load(std::memory_order_relaxed);
  }
  std::uint64_t retries() const noexcept { return retries_.load(std::memory_order_relaxed); }
  std::size_t queued() const;

 protected:
  void write_(const RenderedEvent& event) override;
  void close_() override;

 private:
  struct Started {
    std::chrono::system_clock::time_point time;
    std::string collection;
    std::string queryText;
    std::optional<TraceParent> parent;
    std::uint64_t order = 0;
  };
  void run();
  void run_batches();
  /// One batch: POSTs with retries. Returns when sent, given up, or stopping.
  void export_batch(std::vector<std::string>& spans);
  std::string encode_request(const std::vector<std::string>& spans) const;
  std::string span_json(const monitor::Event& end, const Started* start);

  OtlpOptions options_;
  HttpUrl url_;
  std::string resourceJson_;  // the "resource" object, encoded once

  // Sink thread only.
  std::unordered_map<std::uint64_t, Started> pending_;  // key: connectionId << 32 | requestId
  std::uint64_t order_ = 0;
  std::string spanBuf_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> queue_;  // encoded spans
  bool stopping_ = false;
  bool exporterDone_ = false;   // run() returned
  int cancelFd_ = -1;           // eventfd: readable = abandon the request in flight
  clock_point stopDeadline_{};  // at shutdown: no new request after it
  std::thread thread_;

  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> spansDropped_{0};
  std::atomic<std::uint64_t> postsFailed_{0};
  std::atomic<std::uint64_t> retries_{0};
};

/// Appends the Prometheus text of the OTLP counters of `sinks` (label
/// sink="otlp:..."): varanus_otlp_spans_sent_total, _spans_dropped_total,
/// _posts_failed_total, _retries_total, varanus_otlp_queue_spans.
void render_otlp_metrics(std::string& out, const std::vector<const OtlpSink*>& sinks);

/// The HTTP exchange the exporter uses, exposed for tests: POSTs `body` to
/// url (host, port, path + `target`), waits at most `timeout` in all.
/// Returns the status code, or -1 with `error` set (no connection, timeout,
/// or `cancelFd` became readable).
/// `retryAfter` receives a Retry-After header's seconds when present.
int http_post(const HttpUrl& url, std::string_view target, std::string_view body,
              const std::vector<std::pair<std::string, std::string>>& headers,
              std::chrono::milliseconds timeout, std::string* error,
              std::optional<std::chrono::seconds>* retryAfter = nullptr, int cancelFd = -1);

/// gzip (RFC 1952) of `data`, for Content-Encoding: gzip.
std::string gzip_compress(std::string_view data);

}  // namespace varanus::sinks
