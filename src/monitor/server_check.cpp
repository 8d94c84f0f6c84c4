// One monitored server's checks (see the header).
#include "varanus/monitor/server_check.hpp"

#include <bson/bson.h>

namespace varanus::monitor::sdam {

void RttAverage::add(std::chrono::microseconds sample) noexcept {
  if (!average_) {
    average_ = sample;
    return;
  }
  // Integer microseconds: 0.2 * sample + 0.8 * average, rounded.
  const std::int64_t next = (sample.count() * 2 + average_->count() * 8 + 5) / 10;
  average_ = std::chrono::microseconds(next);
}

ServerCheck::ServerCheck(std::string address, std::chrono::milliseconds heartbeatFrequency,
                         bool streaming)
    : address_(std::move(address)),
      heartbeatFrequency_(heartbeatFrequency),
      streaming_(streaming) {}

wire::BsonBytes ServerCheck::hello_command() const {
  bson_t b;
  bson_init(&b);
  bson_append_int32(&b, "hello", -1, 1);
  bson_append_bool(&b, "helloOk", -1, true);
  if (awaited()) {
    bson_t tv;
    bson_append_document_begin(&b, "topologyVersion", -1, &tv);
    bson_oid_t oid;
    std::copy(topologyVersion_->processId.bytes.begin(), topologyVersion_->processId.bytes.end(),
              oid.bytes);
    bson_append_oid(&tv, "processId", -1, &oid);
    bson_append_int64(&tv, "counter", -1, topologyVersion_->counter);
    bson_append_document_end(&b, &tv);
    bson_append_int64(&b, "maxAwaitTimeMS", -1, heartbeatFrequency_.count());
  }
  bson_append_utf8(&b, "$db", -1, "admin", -1);
  const std::uint8_t* p = bson_get_data(&b);
  wire::BsonBytes out(p, p + b.len);
  bson_destroy(&b);
  return out;
}

TopologyEvent ServerCheck::started(const ViaMap& via) const {
  return heartbeat_started(address_, via, awaited());
}

ServerCheck::Outcome ServerCheck::succeeded(wire::BsonView reply, std::chrono::microseconds elapsed,
                                            bool awaited, const ViaMap& via) {
  if (!awaited) rtt_.add(elapsed);
  ServerDescription sd = ServerDescription::from_hello(address_, reply, rtt_.value());
  topologyVersion_ = sd.topologyVersion;
  if (sd.type == ServerType::Unknown) {
    rtt_.reset();  // ok: 0 is a failed check for the RTT too
    sd.roundTripTime.reset();
  }
  return {std::move(sd), heartbeat_succeeded(address_, via, awaited, elapsed, reply)};
}

ServerCheck::Outcome ServerCheck::failed(std::string_view error, std::chrono::microseconds elapsed,
                                         bool awaited, const ViaMap& via) {
  rtt_.reset();
  topologyVersion_.reset();
  return {ServerDescription::from_error(address_, std::string(error)),
          heartbeat_failed(address_, via, awaited, elapsed, error)};
}

}  // namespace varanus::monitor::sdam
