// The SDAM monitoring events as BSON documents (see the header).
#include "varanus/monitor/sdam_events.hpp"

#include <bson/bson.h>

#include <algorithm>

#include "varanus/wire/bson_walk.hpp"

namespace varanus::monitor::sdam {

namespace {

/// A bson_t being built, copied out as bytes.
class Builder {
 public:
  Builder() { bson_init(&doc_); }
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;
  ~Builder() { bson_destroy(&doc_); }
  bson_t* get() { return &doc_; }
  wire::BsonBytes bytes() const {
    const std::uint8_t* p = bson_get_data(&doc_);
    return wire::BsonBytes(p, p + doc_.len);
  }

 private:
  bson_t doc_;
};

void put_string(bson_t* b, const char* key, std::string_view value) {
  bson_append_utf8(b, key, -1, value.data(), static_cast<int>(value.size()));
}

void put_document(bson_t* b, const char* key, const wire::BsonBytes& bytes) {
  bson_t child;
  if (bson_init_static(&child, bytes.data(), bytes.size()))
    bson_append_document(b, key, -1, &child);
}

void put_address(bson_t* b, std::string_view address, const ViaMap& via) {
  put_string(b, "address", address);
  if (auto it = via.find(address); it != via.end()) put_string(b, "via", it->second);
}

TopologyEvent make(std::string name, Builder& b) {
  return TopologyEvent{std::move(name), b.bytes()};
}

}  // namespace

wire::BsonBytes server_document(const ServerDescription& sd) {
  Builder b;
  put_string(b.get(), "address", sd.address);
  put_string(b.get(), "type", to_string(sd.type));
  if (sd.setName) put_string(b.get(), "setName", *sd.setName);
  if (sd.setVersion) bson_append_int64(b.get(), "setVersion", -1, *sd.setVersion);
  if (sd.electionId) {
    bson_oid_t oid;
    std::copy(sd.electionId->bytes.begin(), sd.electionId->bytes.end(), oid.bytes);
    bson_append_oid(b.get(), "electionId", -1, &oid);
  }
  if (sd.primary) put_string(b.get(), "primary", *sd.primary);
  const std::vector<std::string> members = sd.members();
  if (!members.empty()) {
    bson_t array;
    bson_append_array_begin(b.get(), "hosts", -1, &array);
    char key[16];
    for (std::size_t i = 0; i < members.size(); ++i) {
      const char* k = nullptr;
      bson_uint32_to_string(static_cast<std::uint32_t>(i), &k, key, sizeof key);
      put_string(&array, k, members[i]);
    }
    bson_append_array_end(b.get(), &array);
  }
  if (!sd.tags.empty()) {
    bson_t tags;
    bson_append_document_begin(b.get(), "tags", -1, &tags);
    for (const auto& [k, v] : sd.tags) put_string(&tags, k.c_str(), v);
    bson_append_document_end(b.get(), &tags);
  }
  if (sd.roundTripTime)
    bson_append_int64(b.get(), "roundTripTimeMicros", -1, sd.roundTripTime->count());
  if (sd.type == ServerType::Unknown && sd.error) put_string(b.get(), "error", *sd.error);
  return b.bytes();
}

wire::BsonBytes topology_document(const TopologyDescription& td) {
  Builder b;
  put_string(b.get(), "type", to_string(td.type));
  if (td.setName) put_string(b.get(), "setName", *td.setName);
  bson_t servers;
  bson_append_array_begin(b.get(), "servers", -1, &servers);
  char key[16];
  std::uint32_t i = 0;
  for (const auto& [address, sd] : td.servers) {
    const char* k = nullptr;
    bson_uint32_to_string(i++, &k, key, sizeof key);
    bson_t server;
    bson_append_document_begin(&servers, k, -1, &server);
    put_string(&server, "address", address);
    put_string(&server, "type", to_string(sd.type));
    bson_append_document_end(&servers, &server);
  }
  bson_append_array_end(b.get(), &servers);
  return b.bytes();
}

std::vector<TopologyEvent> opening_events(const TopologyDescription& initial, const ViaMap& via) {
  std::vector<TopologyEvent> out;
  Builder opening;
  out.push_back(make("topologyOpening", opening));
  Builder changed;
  put_document(changed.get(), "previousDescription", topology_document(TopologyDescription{}));
  put_document(changed.get(), "newDescription", topology_document(initial));
  out.push_back(make("topologyDescriptionChanged", changed));
  for (const auto& [address, sd] : initial.servers) {
    Builder b;
    put_address(b.get(), address, via);
    out.push_back(make("serverOpening", b));
  }
  return out;
}

std::vector<TopologyEvent> update_events(const Update& update, const TopologyDescription& now,
                                         const ViaMap& via) {
  std::vector<TopologyEvent> out;
  for (const auto& c : update.changed) {
    Builder b;
    put_address(b.get(), c.current.address, via);
    put_document(b.get(), "previousDescription", server_document(c.previous));
    put_document(b.get(), "newDescription", server_document(c.current));
    out.push_back(make("serverDescriptionChanged", b));
  }
  for (const auto& address : update.opened) {
    Builder b;
    put_address(b.get(), address, via);
    out.push_back(make("serverOpening", b));
  }
  for (const auto& address : update.closed) {
    Builder b;
    put_address(b.get(), address, via);
    out.push_back(make("serverClosed", b));
  }
  if (update.previous) {
    Builder b;
    put_document(b.get(), "previousDescription", topology_document(*update.previous));
    put_document(b.get(), "newDescription", topology_document(now));
    out.push_back(make("topologyDescriptionChanged", b));
  }
  return out;
}

std::vector<TopologyEvent> closing_events(const TopologyDescription& last, const ViaMap& via) {
  std::vector<TopologyEvent> out;
  for (const auto& [address, sd] : last.servers) {
    Builder b;
    put_address(b.get(), address, via);
    out.push_back(make("serverClosed", b));
  }
  Builder closed;
  out.push_back(make("topologyClosed", closed));
  return out;
}

TopologyEvent heartbeat_started(std::string_view address, const ViaMap& via, bool awaited) {
  Builder b;
  put_address(b.get(), address, via);
  bson_append_bool(b.get(), "awaited", -1, awaited);
  return make("serverHeartbeatStarted", b);
}

TopologyEvent heartbeat_succeeded(std::string_view address, const ViaMap& via, bool awaited,
                                  std::chrono::microseconds duration, wire::BsonView reply) {
  Builder b;
  put_address(b.get(), address, via);
  bson_append_bool(b.get(), "awaited", -1, awaited);
  bson_append_int64(b.get(), "durationMicros", -1, duration.count());
  bson_t r;
  if (reply.init_static(&r)) bson_append_document(b.get(), "reply", -1, &r);
  return make("serverHeartbeatSucceeded", b);
}

TopologyEvent heartbeat_failed(std::string_view address, const ViaMap& via, bool awaited,
                               std::chrono::microseconds duration, std::string_view failure) {
  Builder b;
  put_address(b.get(), address, via);
  bson_append_bool(b.get(), "awaited", -1, awaited);
  bson_append_int64(b.get(), "durationMicros", -1, duration.count());
  put_string(b.get(), "failure", failure);
  return make("serverHeartbeatFailed", b);
}

}  // namespace varanus::monitor::sdam

namespace varanus::monitor::sdam {

bool is_topology_event_name(std::string_view name) noexcept {
  return std::find(std::begin(kTopologyEventNames), std::end(kTopologyEventNames), name) !=
         std::end(kTopologyEventNames);
}

}  // namespace varanus::monitor::sdam

namespace varanus::monitor {

namespace {

wire::BsonView view_of(const wire::BsonBytes& b) {
  return {b.data(), static_cast<std::uint32_t>(b.size())};
}

// The reply holds what a hello with speculativeAuthenticate answers (a
// SASL payload) or the mechanisms of a user: redacted whole.
bool secret_reply(const wire::BsonBytes& fields) {
  wire::BsonElement reply;
  if (!wire::BsonWalk::find(view_of(fields), "reply", reply) || !reply.is_document()) return false;
  wire::BsonElement e;
  return wire::BsonWalk::find(reply.as_document(), "speculativeAuthenticate", e) ||
         wire::BsonWalk::find(reply.as_document(), "saslSupportedMechs", e);
}

wire::BsonBytes without_reply(const wire::BsonBytes& fields) {
  bson_t in;
  bson_t out;
  bson_init(&out);
  if (bson_init_static(&in, fields.data(), fields.size())) {
    bson_iter_t it;
    if (bson_iter_init(&it, &in)) {
      while (bson_iter_next(&it)) {
        if (std::string_view(bson_iter_key(&it)) == "reply") {
          bson_t empty;
          bson_init(&empty);
          bson_append_document(&out, "reply", -1, &empty);
          bson_destroy(&empty);
        } else {
          bson_append_iter(&out, nullptr, 0, &it);
        }
      }
    }
  }
  const std::uint8_t* p = bson_get_data(&out);
  wire::BsonBytes bytes(p, p + out.len);
  bson_destroy(&out);
  return bytes;
}

}  // namespace

Event topology_event(const sdam::TopologyEvent& event, std::chrono::system_clock::time_point time) {
  Event e;
  e.type = EventType::topology;
  e.time = time;
  e.commandName = event.name;
  if (event.name == "serverHeartbeatSucceeded" && secret_reply(event.fields)) {
    e.document = without_reply(event.fields);
    e.redacted = true;
  } else {
    e.document = event.fields;
  }
  return e;
}

}  // namespace varanus::monitor
