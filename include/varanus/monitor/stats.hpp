// varanus::monitor — every process-wide counter, declared in one table with
// its help text, away from the logic that bumps it. Lock-free (relaxed
// atomics): I/O threads increment, the admin endpoint and the Prometheus
// sink read. Tests assert counters by name (Stats::find).
#pragma once

#include <atomic>
#include <cstdint>
#include <iterator>
#include <string_view>

namespace varanus::monitor {

// X(member, prometheus name, type, help)
#define VARANUS_STATS(X)                                                                      \
  X(connectionsAccepted, "varanus_connections_total", counter, "Client connections accepted") \
  X(connectionsActive, "varanus_connections_active", gauge, "Client connections open now")    \
  X(upstreamConnectFailures, "varanus_upstream_connect_failures_total", counter,              \
    "Upstream connection attempts that failed")                                               \
  X(upstreamUp, "varanus_upstream_up", gauge,                                                 \
    "1 when the last upstream connection attempt succeeded, else 0")                          \
  X(connectionsRefused, "varanus_connections_refused_total", counter,                         \
    "Client connections closed at once: maxConnections were open")                            \
  X(descriptorsExhausted, "varanus_descriptors_exhausted_total", counter,                     \
    "Times the process ran out of file descriptors (accepting paused, or a client closed "    \
    "for want of an upstream socket)")                                                        \
  X(halfCloseTimeouts, "varanus_half_close_timeouts_total", counter,                          \
    "Connections ended because the client closed and the upstream did not finish within "     \
    "halfCloseTimeoutSeconds")                                                                \
  X(idleTimeouts, "varanus_idle_timeouts_total", counter,                                     \
    "Connections ended after idleTimeoutSeconds without a byte either way")                   \
  X(tlsAtPlaintextListener, "varanus_client_tls_at_plaintext_listener_total", counter,        \
    "Clients that began a TLS handshake at a plaintext listener (closed, with a diagnostic)") \
  X(helloRewrites, "varanus_hello_rewrites_total", counter,                                   \
    "Hello replies rewritten to name varanus's member listeners (in front of a replica set: " \
    "the only bytes varanus changes)")                                                        \
  X(bytesFromClient, "varanus_client_bytes_total", counter, "Bytes read from clients")        \
  X(bytesFromServer, "varanus_server_bytes_total", counter, "Bytes read from the upstream")   \
  X(frames, "varanus_frames_total", counter, "Wire frames inspected (both directions)")       \
  X(decodeErrors, "varanus_decode_errors_total", counter,                                     \
    "Frames that failed to decode; inspection of that connection stopped, relaying went on")  \
  X(oversizedFrames, "varanus_oversized_frames_total", counter,                               \
    "Frames over the maximum message size; inspection stopped, relaying went on")             \
  X(pendingOverflows, "varanus_pending_overflows_total", counter,                             \
    "Connections whose inspection stopped with more than maxPendingRequests requests "        \
    "without a reply; relaying went on")                                                      \
  X(uninspectedCompressed, "varanus_uninspected_compressed_frames_total", counter,            \
    "OP_COMPRESSED frames relayed without inspection: past their connection's "               \
    "decompression budget")                                                                   \
  X(sparseFrames, "varanus_sparse_frames_total", counter,                                     \
    "Large frames inspected as they streamed past, keeping only a bounded part of them")      \
  X(busyPollHits, "varanus_busy_poll_hits_total", counter,                                    \
    "Waits for socket events ended by a brief poll (busyPollMicros) instead of a sleep")      \
  X(busyPollMisses, "varanus_busy_poll_misses_total", counter,                                \
    "Brief polls that found nothing and went to sleep")                                       \
  X(commands, "varanus_commands_started_total", counter, "Command started events emitted")    \
  X(eventsPublished, "varanus_events_published_total", counter, "Events handed to the sinks") \
  X(eventsDropped, "varanus_events_dropped_total", counter,                                   \
    "Events dropped because a sink queue was full (all sinks)")                               \
  X(sinkRescues, "varanus_sink_rescues_total", counter,                                       \
    "Times every core was busy and the rescuer thread drained the event queue for the "       \
    "starved (SCHED_IDLE) sink thread")

struct Stats {
#define VARANUS_STATS_MEMBER(member, name, type, help) std::atomic<std::int64_t> member{0};
  VARANUS_STATS(VARANUS_STATS_MEMBER)
#undef VARANUS_STATS_MEMBER

  void add(std::atomic<std::int64_t>& counter, std::int64_t n = 1) noexcept {
    counter.fetch_add(n, std::memory_order_relaxed);
  }

  /// Visits every counter: f(std::string_view name, std::string_view type,
  /// std::string_view help, std::int64_t value).
  template <class F>
  void for_each(F&& f) const {
#define VARANUS_STATS_VISIT(member, name, type, help)                        \
  f(std::string_view(name), std::string_view(#type), std::string_view(help), \
    member.load(std::memory_order_relaxed));
    VARANUS_STATS(VARANUS_STATS_VISIT)
#undef VARANUS_STATS_VISIT
  }

  /// TLS handshake failures by leg and kind (varanus_tls_handshake_failures_total
  /// {leg, reason}): a fixed table, so the label set is bounded.
  static constexpr std::string_view kTlsLegs[] = {"client", "upstream"};
  static constexpr std::string_view kTlsFailureKinds[] = {
      "unknown_ca",     "expired", "hostname_mismatch", "protocol_version",
      "no_client_cert", "not_tls", "peer_closed",       "other"};
  static constexpr std::size_t kTlsKindCount = std::size(kTlsFailureKinds);
  std::atomic<std::int64_t> tlsHandshakeFailures[2][kTlsKindCount]{};
  /// When the certificate the client leg serves expires (Unix seconds; 0:
  /// no TLS): varanus_tls_certificate_expiry_seconds is this minus now.
  std::atomic<std::int64_t> tlsCertificateNotAfter{0};

  void add_tls_failure(bool upstreamLeg, std::string_view kind) noexcept {
    std::size_t k = kTlsKindCount - 1;  // other
    for (std::size_t i = 0; i < kTlsKindCount; ++i)
      if (kTlsFailureKinds[i] == kind) k = i;
    add(tlsHandshakeFailures[upstreamLeg ? 1 : 0][k]);
  }
  /// f(std::string_view leg, std::string_view kind, std::int64_t count).
  template <class F>
  void for_each_tls_failure(F&& f) const {
    for (std::size_t leg = 0; leg < 2; ++leg)
      for (std::size_t k = 0; k < kTlsKindCount; ++k)
        f(kTlsLegs[leg], kTlsFailureKinds[k],
          tlsHandshakeFailures[leg][k].load(std::memory_order_relaxed));
  }

  /// Value of the counter with that Prometheus name, or -1.
  std::int64_t find(std::string_view name) const {
    std::int64_t out = -1;
    for_each([&](std::string_view n, std::string_view, std::string_view, std::int64_t v) {
      if (n == name) out = v;
    });
    return out;
  }
};

}  // namespace varanus::monitor
