// Event -> JSON line, both formats. See render.hpp for the schema; the hot
// loop is the sink thread's, so everything appends into one reused string.
#include "varanus/sinks/render.hpp"

#include <bson/bson.h>

#include <charconv>
#include <cstring>
#include <limits>

#include "varanus/wire/bson_walk.hpp"
#include "varanus/wire/host_port.hpp"
#include "varanus/wire/json.hpp"

namespace varanus::sinks {

std::string_view to_string(Format f) noexcept {
  switch (f) {
    case Format::varanus:
      return "varanus";
    case Format::mongodbLog:
      return "mongodb-log";
  }
  return "varanus";
}

bool parse_format(std::string_view text, Format& out) noexcept {
  if (text == "varanus") {
    out = Format::varanus;
    return true;
  }
  if (text == "mongodb-log") {
    out = Format::mongodbLog;
    return true;
  }
  return false;
}

std::string_view to_string(Redaction r) noexcept {
  switch (r) {
    case Redaction::none:
      return "none";
    case Redaction::values:
      return "values";
  }
  return "none";
}

bool parse_redaction(std::string_view text, Redaction& out) noexcept {
  if (text == "none") {
    out = Redaction::none;
    return true;
  }
  if (text == "values") {
    out = Redaction::values;
    return true;
  }
  return false;
}

std::string_view to_string(Lines l) noexcept {
  return l == Lines::commands ? "commands" : "events";
}

bool parse_lines(std::string_view text, Lines& out) noexcept {
  if (text == "events" || text == "commands") {
    out = text == "events" ? Lines::events : Lines::commands;
    return true;
  }
  return false;
}

std::string_view to_string(Documents d) noexcept {
  return d == Documents::string ? "string" : "object";
}

bool parse_documents(std::string_view text, Documents& out) noexcept {
  if (text == "object" || text == "string") {
    out = text == "object" ? Documents::object : Documents::string;
    return true;
  }
  return false;
}

std::string_view to_string(ExtendedJson x) noexcept {
  return x == ExtendedJson::canonical ? "canonical" : "relaxed";
}

bool parse_extended_json(std::string_view text, ExtendedJson& out) noexcept {
  if (text == "relaxed" || text == "canonical") {
    out = text == "relaxed" ? ExtendedJson::relaxed : ExtendedJson::canonical;
    return true;
  }
  return false;
}

void put_rfc3339(char* p, std::chrono::system_clock::time_point t);

namespace {

using monitor::Event;
using monitor::EventType;

template <class Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// `,"key":`, made at compile time from the literal (keys are ASCII, never
// escaped): one append of a ready text per key.
struct Key {
  char text[40] = {};
  std::size_t size = 0;
  template <std::size_t N>
  consteval Key(const char (&k)[N]) {  // NOLINT: implicit from a literal on purpose
    static_assert(N + 3 <= sizeof text, "key too long");
    text[0] = ',';
    text[1] = '"';
    for (std::size_t i = 0; i + 1 < N; ++i) text[2 + i] = k[i];
    text[N + 1] = '"';
    text[N + 2] = ':';
    size = N + 3;
  }
};

void key(std::string& out, const Key& k) {
  out.append(k.text, k.size);
}

void str(std::string& out, const Key& k, std::string_view v) {
  key(out, k);
  wire::append_json_string(out, v);
}

template <class Int>
void num(std::string& out, const Key& k, Int v) {
  key(out, k);
  append_int(out, v);
}

// The envelope of a line (everything but its documents) goes through a
// stack buffer with raw writes and reaches the line in few appends: a
// std::string append per key and value cost more than the bytes.
class Chunk {
 public:
  explicit Chunk(std::string& out) : out_(out) {}
  ~Chunk() { flush(); }
  Chunk(const Chunk&) = delete;
  Chunk& operator=(const Chunk&) = delete;

  void flush() {
    out_.append(buf_, n_);
    n_ = 0;
  }
  /// The line itself, up to date (for a document written into it).
  std::string& line() {
    flush();
    return out_;
  }
  void raw(const char* s, std::size_t k) {
    if (k > sizeof buf_ - n_) {
      flush();
      if (k > sizeof buf_) {
        out_.append(s, k);
        return;
      }
    }
    std::memcpy(buf_ + n_, s, k);
    n_ += k;
  }
  void raw(std::string_view v) { raw(v.data(), v.size()); }
  void raw(char c) {
    if (n_ == sizeof buf_) flush();
    buf_[n_++] = c;
  }
  void key(const Key& k) { raw(k.text, k.size); }
  template <class Int>
  void num(const Key& k, Int v) {
    key(k);
    room(24);
    n_ = static_cast<std::size_t>(std::to_chars(buf_ + n_, buf_ + sizeof buf_, v).ptr - buf_);
  }
  void str(const Key& k, std::string_view v) {
    key(k);
    string(v);
  }
  void string(std::string_view v) {
    if (v.size() + 2 <= sizeof buf_ / 2 && wire::json_plain(v)) {
      room(v.size() + 2);
      buf_[n_] = '"';
      std::memcpy(buf_ + n_ + 1, v.data(), v.size());
      buf_[n_ + 1 + v.size()] = '"';
      n_ += v.size() + 2;
    } else {
      flush();
      wire::append_json_string(out_, v);
    }
  }
  void flag(const Key& k, bool v) {
    if (v) {
      key(k);
      raw("true", 4);
    }
  }
  void time(std::chrono::system_clock::time_point t) {
    room(27);
    put_rfc3339(buf_ + n_, t);
    n_ += 27;
  }

 private:
  void room(std::size_t k) {
    if (k > sizeof buf_ - n_) flush();
  }
  std::string& out_;
  std::size_t n_ = 0;
  char buf_[256];
};

void put_digits(char* p, unsigned v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// Longest prefix of `s` no longer than `max` bytes that does not end inside
// a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut);
}

wire::BsonView view_of(const wire::BsonBytes& b) {
  return {b.data(), static_cast<std::uint32_t>(b.size())};
}

// The event's document as a JSON object, bounded. Empty bytes (redacted) ->
// {}. True when cut, here or by the bounded copy the proxy kept.
bool append_document(std::string& out, const Event& e, const RenderOptions& o) {
  const wire::BsonBytes& doc = e.document;
  if (doc.empty()) {
    out += "{}";
    return false;
  }
  if (o.redaction == Redaction::values)
    return append_type_json(out, view_of(doc), o.maxDocumentLength) || e.documentOmitted;
  wire::JsonOptions jo;
  jo.maxLength = o.maxDocumentLength;
  jo.canonical = o.extendedJson == ExtendedJson::canonical;
  return wire::append_relaxed_json(out, view_of(doc), jo).truncated || e.documentCut;
}

// Scratch space for documents that become JSON strings (mongodb-log). The
// sink thread is the only renderer, but a thread_local keeps this safe if a
// user renders elsewhere too.
std::string& scratch() {
  thread_local std::string s;
  return s;
}

// How much JSON the string rendering writes before cutting it at `max`
// (0 = unlimited): a little more than it keeps, so the cut lands in real
// text rather than in the closing brackets a bounded writer adds.
constexpr std::size_t string_budget(std::size_t max) noexcept {
  return max == 0 ? 0 : 2 * max + 64;
}

// The document as a JSON *string* (mongodb-log): relaxed JSON cut at
// maxDocumentLength bytes (never inside a code point) plus "...".
// Returns true when cut.
bool append_view_string(std::string& out, wire::BsonView doc, const RenderOptions& o) {
  std::string& s = scratch();
  s.clear();
  const std::size_t max = o.maxDocumentLength;
  const std::size_t budget = string_budget(max);
  wire::JsonOptions jo;
  jo.maxLength = budget;
  jo.canonical = o.extendedJson == ExtendedJson::canonical;
  if (doc.empty()) {
    s = "{}";
  } else if (o.redaction == Redaction::values) {
    append_type_json(s, doc, budget);
  } else if (wire::append_relaxed_json(s, doc, jo).truncated && s.size() < max + 64) {
    // The writer stopped early: its first `max` bytes may include the
    // brackets it added. Take the real text instead (rare).
    s.clear();
    jo.maxLength = 0;
    wire::append_relaxed_json(s, doc, jo);
  }
  bool cut = false;
  if (max != 0 && s.size() > max) {
    s.resize(utf8_prefix(s, max).size());
    s += "...";
    cut = true;
  }
  wire::append_json_string(out, s);
  return cut;
}

bool append_document_string(std::string& out, const wire::BsonBytes& doc, const RenderOptions& o) {
  return append_view_string(out, doc.empty() ? wire::BsonView{} : view_of(doc), o);
}

// An event's document as the sink's options ask: an object, or a string.
bool append_doc(std::string& out, const Event& e, const RenderOptions& o) {
  if (o.documents == Documents::string)
    return append_document_string(out, e.document, o) || e.documentCut;
  return append_document(out, e, o);
}

struct Failure {
  bool hasCode = false;
  std::int64_t code = 0;
  std::string_view codeName;
  std::string_view errmsg;
  bool hasErrmsg = false;
  wire::BsonView labels;  // framed when present
  bool hasLabels = false;
};

// A numeric `code` as int64 (a double out of range or NaN gives 0).
std::int64_t code_of(const wire::BsonElement& e) noexcept {
  if (e.type == wire::bson_type::kInt32) return e.as_int32();
  if (e.type == wire::bson_type::kInt64) return e.as_int64();
  const double d = e.as_double();
  return d >= -9.0e18 && d <= 9.0e18 ? static_cast<std::int64_t>(d) : 0;
}

Failure extract_failure(const wire::BsonBytes& doc) {
  Failure f;
  wire::BsonWalk w(view_of(doc));
  wire::BsonElement e;
  while (w.next(e)) {
    if (e.key == "code") {
      if (e.type == wire::bson_type::kInt32 || e.type == wire::bson_type::kInt64 ||
          e.type == wire::bson_type::kDouble) {
        f.code = code_of(e);
        f.hasCode = true;
      }
    } else if (e.key == "codeName" && e.type == wire::bson_type::kUtf8) {
      f.codeName = e.as_string();
    } else if ((e.key == "errmsg" || (e.key == "$err" && !f.hasErrmsg)) &&
               e.type == wire::bson_type::kUtf8) {
      f.errmsg = e.as_string();
      f.hasErrmsg = true;
    } else if (e.key == "errorLabels" && e.type == wire::bson_type::kArray) {
      f.labels = e.as_document();
      f.hasLabels = wire::bson_framed(f.labels);
    }
  }
  return f;
}

// `"failure":{...}` for the varanus format. Returns true if errmsg was cut.
bool append_failure(std::string& out, const Event& e, const RenderOptions& o) {
  key(out, "failure");
  if (e.networkFailure()) {
    out += "{\"message\":";
    wire::append_json_string(out, e.message);
    out += '}';
    return false;
  }
  Failure f = extract_failure(e.document);
  bool cut = false;
  out += '{';
  const std::size_t open = out.size();
  auto comma = [&] {
    if (out.size() != open) out += ',';
  };
  if (f.hasCode) {
    out += "\"code\":";
    append_int(out, f.code);
  }
  if (!f.codeName.empty()) {
    comma();
    out += "\"codeName\":";
    wire::append_json_string(out, f.codeName);
  }
  if (f.hasErrmsg) {
    comma();
    out += "\"errmsg\":";
    if (o.redaction == Redaction::values) {
      out += "\"string\"";
    } else {
      std::string_view m = f.errmsg;
      if (o.maxDocumentLength != 0 && m.size() > o.maxDocumentLength) {
        m = utf8_prefix(m, o.maxDocumentLength);
        cut = true;
      }
      wire::append_json_string(out, m);
    }
  }
  if (f.hasLabels) {
    comma();
    out += "\"errorLabels\":[";
    bool first = true;
    wire::BsonWalk labels(f.labels);
    wire::BsonElement label;
    while (labels.next(label)) {
      if (label.type != wire::bson_type::kUtf8) continue;
      if (!first) out += ',';
      first = false;
      wire::append_json_string(out, label.as_string());
    }
    out += ']';
  }
  out += '}';
  return cut;
}

const monitor::ConnectionInfo& info_of(const Event& e) {
  static const monitor::ConnectionInfo none;
  return e.connection ? *e.connection : none;
}

}  // namespace

// The keys every line of a connection shares, from connectionId to driver.
static void append_connection(std::string& out, const monitor::ConnectionInfo& c) {
  num(out, "connectionId", c.connectionId);
  str(out, "client", c.client);
  str(out, "server", c.server);
  if (c.serverConnectionId) num(out, "serverConnectionId", *c.serverConnectionId);
  if (!c.appName.empty()) str(out, "appName", c.appName);
  if (!c.driver.empty()) str(out, "driver", c.driver);
}

std::string_view RenderCache::connection_text(const monitor::ConnectionInfoPtr& c) {
  // Direct-mapped by address. The entry holds a reference, so the address
  // cannot be reused by another connection's snapshot while it is cached.
  const auto h = reinterpret_cast<std::uintptr_t>(c.get()) / alignof(monitor::ConnectionInfo);
  Connection& slot = connections_[h % connections_.size()];
  if (slot.info != c) {
    slot.text.clear();
    sinks::append_connection(slot.text, *c);
    slot.info = c;
  }
  return slot.text;
}

namespace {

// The rest of a Lines::commands line after databaseName/collection: the
// command (from the started event), the reply or failure, the outcome, the
// duration and the reply's summary.
void append_command_record(Chunk& w, const Event& e, const RenderOptions& o, const Event* started) {
  if (started != nullptr) {
    w.key("command");
    w.flag("commandTruncated", append_doc(w.line(), *started, o));
  }
  const bool ok = e.type == EventType::commandSucceeded;
  if (ok) {
    w.key("reply");
    w.flag("replyTruncated", append_doc(w.line(), e, o));
  } else {
    w.flag("failureTruncated", append_failure(w.line(), e, o));
  }
  w.str("outcome", ok ? "succeeded" : "failed");
  w.num("durationMicros", e.durationMicros);
  const monitor::ReplySummary& s = e.summary;
  if (s.nReturned >= 0) w.num("nReturned", s.nReturned);
  if (s.n >= 0) w.num("n", s.n);
  if (s.nModified >= 0) w.num("nModified", s.nModified);
  if (s.nUpserted >= 0) w.num("nUpserted", s.nUpserted);
  if (s.nRemoved >= 0) w.num("nRemoved", s.nRemoved);
  if (s.writeErrors >= 0) w.num("writeErrors", s.writeErrors);
  if (s.hasCursor) {
    if (o.extendedJson == ExtendedJson::canonical) {
      // Above 2^53 a JSON reader with double numbers would change it.
      w.key("cursorId");
      w.raw("{\"$numberLong\":\"", 16);
      char buf[24];
      auto r = std::to_chars(buf, buf + sizeof buf, s.cursorId);
      w.raw(buf, static_cast<std::size_t>(r.ptr - buf));
      w.raw("\"}", 2);
    } else {
      w.num("cursorId", s.cursorId);
    }
    w.key("cursorExhausted");
    w.raw(s.cursorId == 0 ? "true" : "false");
  }
  if (e.requestBytes != 0) w.num("requestBytes", e.requestBytes);
  if (e.replyBytes != 0) w.num("replyBytes", e.replyBytes);
}

// Topology events (EventType::topology): the SDAM event's fields, each at
// the top level of the line.

// A field that is not a string, bool, integer or document (none of the
// builders makes one; a user's event might): its relaxed JSON, read from a
// one-element document.
void append_other_value(std::string& out, const wire::BsonElement& el, const RenderOptions& o) {
  wire::BsonBytes one;
  const std::uint32_t total = 4 + 1 + 2 + el.size + 1;
  one.reserve(total);
  for (int i = 0; i < 4; ++i) one.push_back(static_cast<std::uint8_t>(total >> (8 * i)));
  one.push_back(el.type);
  one.push_back('v');
  one.push_back(0);
  one.insert(one.end(), el.value, el.value + el.size);
  one.push_back(0);
  std::string& s = scratch();
  s.clear();
  wire::JsonOptions jo;
  jo.canonical = o.extendedJson == ExtendedJson::canonical;
  wire::append_relaxed_json(s, view_of(one), jo);
  // {"v":VALUE}
  if (s.size() > 6 && s.compare(0, 5, "{\"v\":") == 0)
    out.append(s, 5, s.size() - 6);
  else
    out += "null";
}

// A document field (newDescription, reply, ...) as the sink's documents
// option asks; true when cut at maxDocumentLength. Redaction::values turns
// the heartbeat reply's values into type names (it is a server reply, like
// a command's); descriptions are varanus's own view of the topology.
bool append_topology_document(std::string& out, const wire::BsonElement& el,
                              const RenderOptions& o) {
  RenderOptions local = o;
  if (el.key != "reply") local.redaction = Redaction::none;
  const wire::BsonView doc = el.as_document();
  if (!wire::bson_framed(doc)) {
    out += el.type == wire::bson_type::kArray ? "[]" : "{}";
    return false;
  }
  if (local.documents == Documents::string) return append_view_string(out, doc, local);
  if (local.redaction == Redaction::values)
    return append_type_json(out, doc, local.maxDocumentLength);
  wire::JsonOptions jo;
  jo.maxLength = local.maxDocumentLength;
  jo.canonical = local.extendedJson == ExtendedJson::canonical;
  return wire::append_relaxed_json(out, doc, jo).truncated;
}

// `,"key":value` per field of a topology event; a document cut at
// maxDocumentLength adds `"<key>Truncated":true`.
void append_topology_fields(std::string& out, const Event& e, const RenderOptions& o) {
  if (e.document.empty()) return;
  wire::BsonWalk walk(view_of(e.document));
  wire::BsonElement el;
  while (walk.next(el)) {
    out += ',';
    wire::append_json_string(out, el.key);
    out += ':';
    bool cut = false;
    switch (el.type) {
      case wire::bson_type::kUtf8:
        if (el.key == "failure") {
          // A heartbeat's network failure, shaped like a command's (one
          // type per key for log stores): {"message": ...}.
          out += "{\"message\":";
          wire::append_json_string(out, el.as_string());
          out += '}';
        } else {
          wire::append_json_string(out, el.as_string());
        }
        break;
      case wire::bson_type::kBool:
        out += el.as_bool() ? "true" : "false";
        break;
      case wire::bson_type::kInt32:
        append_int(out, el.as_int32());
        break;
      case wire::bson_type::kInt64:
        append_int(out, el.as_int64());
        break;
      case wire::bson_type::kDocument:
      case wire::bson_type::kArray:
        cut = append_topology_document(out, el, o);
        break;
      default:
        append_other_value(out, el, o);
        break;
    }
    if (cut) {
      out += ',';
      wire::append_json_string(out, std::string(el.key) + "Truncated");
      out += ":true";
    }
  }
}

void render_varanus_topology(std::string& out, const Event& e, const RenderOptions& o) {
  out += "{\"t\":\"";
  append_rfc3339(out, e.time);
  out += "\",\"event\":";
  wire::append_json_string(out, e.commandName);
  append_topology_fields(out, e, o);
  if (e.redacted) out += ",\"redacted\":true";
  out += '}';
}

void render_varanus(std::string& out, const Event& e, const RenderOptions& o, RenderCache* cache,
                    const Event* started) {
  if (e.isTopology()) {
    render_varanus_topology(out, e, o);
    return;
  }
  const monitor::ConnectionInfo& c = info_of(e);
  Chunk w(out);
  w.raw("{\"t\":\"", 6);
  w.time(e.time);
  w.raw("\",\"event\":\"", 11);
  if (o.lines == Lines::commands && e.isCommand() && e.type != EventType::commandStarted)
    w.raw("command", 7);
  else
    w.raw(monitor::to_string(e.type));
  w.raw('"');
  if (cache != nullptr && e.connection) {
    w.raw(cache->connection_text(e.connection));
  } else {
    append_connection(w.line(), c);
  }

  switch (e.type) {
    case EventType::commandStarted:
    case EventType::commandSucceeded:
    case EventType::commandFailed: {
      w.num("requestId", e.requestId);
      w.str("commandName", e.commandName);
      w.str("databaseName", e.databaseName);
      if (!e.collection.empty()) w.str("collection", e.collection);
      if (e.type == EventType::commandStarted) {
        w.key("command");
        w.flag("commandTruncated", append_doc(w.line(), e, o));
      } else if (o.lines == Lines::commands) {
        append_command_record(w, e, o, started);
      } else if (e.type == EventType::commandSucceeded) {
        w.key("reply");
        w.flag("replyTruncated", append_doc(w.line(), e, o));
        w.num("durationMicros", e.durationMicros);
      } else {
        w.flag("failureTruncated", append_failure(w.line(), e, o));
        w.num("durationMicros", e.durationMicros);
      }
      if (e.hello != monitor::HelloKind::none) w.str("hello", monitor::to_string(e.hello));
      w.flag("unacknowledged", e.unacknowledged);
      w.flag("exhaust", e.exhaust);
      w.flag("awaited", e.awaited);
      w.flag("redacted", e.redacted);
      if (e.compressor) w.str("compressor", wire::to_string(*e.compressor));
      break;
    }
    case EventType::connectionOpened:
      break;
    case EventType::connectionClosed:
      w.str("reason", e.message);
      w.num("bytesFromClient", e.bytesFromClient);
      w.num("bytesFromServer", e.bytesFromServer);
      w.num("commands", e.commands);
      break;
    case EventType::topology:  // rendered above
      break;
  }
  w.raw('}');
}

// "host:port" / "[v6]:port" -> host, port (0 when absent). Text that does
// not parse is shown whole as the host.
void split_host_port(std::string_view hp, std::string_view& host, std::uint32_t& port) {
  const wire::HostPort parsed = wire::parse_host_port(hp, wire::PortRule::optional);
  host = parsed.ok() ? parsed.host : hp;
  port = parsed.ok() ? parsed.port.value_or(0) : 0;
}

// durationMS of the logging specs: milliseconds as a number with
// microsecond precision (trailing zeros left out).
void append_duration_ms(std::string& out, std::int64_t micros) {
  key(out, "durationMS");
  append_int(out, micros / 1000);
  const std::int64_t frac = micros % 1000;
  if (frac > 0) {
    char buf[4] = {'.', '0', '0', '0'};
    put_digits(buf + 1, static_cast<unsigned>(frac), 3);
    int n = 4;
    while (buf[n - 1] == '0') --n;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

// The SDAM logging spec's message for each event ("Server description
// changed" has none there: named the same way).
std::string_view topology_message(std::string_view name) noexcept {
  static constexpr std::pair<std::string_view, std::string_view> kMessages[] = {
      {"topologyOpening", "Starting topology monitoring"},
      {"topologyClosed", "Stopped topology monitoring"},
      {"topologyDescriptionChanged", "Topology description changed"},
      {"serverOpening", "Starting server monitoring"},
      {"serverClosed", "Stopped server monitoring"},
      {"serverDescriptionChanged", "Server description changed"},
      {"serverHeartbeatStarted", "Server heartbeat started"},
      {"serverHeartbeatSucceeded", "Server heartbeat succeeded"},
      {"serverHeartbeatFailed", "Server heartbeat failed"},
  };
  for (const auto& [n, m] : kMessages)
    if (n == name) return m;
  return name;
}

// The SDAM logging spec's structured message: address as serverHost /
// serverPort, durationMicros as durationMS, documents (descriptions,
// reply) as relaxed-JSON strings like a command log's.
void render_mongodb_log_topology(std::string& out, const Event& e, const RenderOptions& o) {
  out += "{\"t\":\"";
  append_rfc3339(out, e.time);
  out += "\",\"message\":";
  wire::append_json_string(out, topology_message(e.commandName));
  if (e.document.empty()) {
    out += '}';
    return;
  }
  wire::BsonWalk walk(view_of(e.document));
  wire::BsonElement el;
  while (walk.next(el)) {
    if (el.key == "address" && el.type == wire::bson_type::kUtf8) {
      std::string_view host;
      std::uint32_t port = 0;
      split_host_port(el.as_string(), host, port);
      str(out, "serverHost", host);
      if (port != 0) num(out, "serverPort", port);
      continue;
    }
    if (el.key == "durationMicros" &&
        (el.type == wire::bson_type::kInt64 || el.type == wire::bson_type::kInt32)) {
      append_duration_ms(out, el.type == wire::bson_type::kInt64 ? el.as_int64() : el.as_int32());
      continue;
    }
    out += ',';
    wire::append_json_string(out, el.key);
    out += ':';
    switch (el.type) {
      case wire::bson_type::kUtf8:
        wire::append_json_string(out, el.as_string());
        break;
      case wire::bson_type::kBool:
        out += el.as_bool() ? "true" : "false";
        break;
      case wire::bson_type::kInt32:
        append_int(out, el.as_int32());
        break;
      case wire::bson_type::kInt64:
        append_int(out, el.as_int64());
        break;
      case wire::bson_type::kDocument:
      case wire::bson_type::kArray: {
        RenderOptions local = o;
        if (el.key != "reply") local.redaction = Redaction::none;
        append_view_string(
            out, wire::bson_framed(el.as_document()) ? el.as_document() : wire::BsonView{}, local);
        break;
      }
      default:
        append_other_value(out, el, o);
        break;
    }
  }
  out += '}';
}

// The command logging spec's structured message. durationMS is a double
// (milliseconds with microsecond precision); documents are strings.
void render_mongodb_log(std::string& out, const Event& e, const RenderOptions& o,
                        const Event* started) {
  if (e.isTopology()) {
    render_mongodb_log_topology(out, e, o);
    return;
  }
  const monitor::ConnectionInfo& c = info_of(e);
  out += "{\"t\":\"";
  append_rfc3339(out, e.time);
  out += "\",\"message\":";
  switch (e.type) {
    case EventType::commandStarted:
      out += "\"Command started\"";
      break;
    case EventType::commandSucceeded:
      out += "\"Command succeeded\"";
      break;
    case EventType::commandFailed:
      out += "\"Command failed\"";
      break;
    case EventType::connectionOpened:
      out += "\"Connection created\"";
      break;
    case EventType::connectionClosed:
      out += "\"Connection closed\"";
      break;
    case EventType::topology:  // rendered above
      break;
  }
  if (e.isCommand()) {
    str(out, "commandName", e.commandName);
    str(out, "databaseName", e.databaseName);
    if (!e.collection.empty()) str(out, "collection", e.collection);
    num(out, "requestId", e.requestId);
    // No operationId: a proxy sees no driver operation grouping commands.
  }
  num(out, "driverConnectionId", c.connectionId);
  std::string_view host;
  std::uint32_t port = 0;
  split_host_port(c.server, host, port);
  str(out, "serverHost", host);
  if (port != 0) num(out, "serverPort", port);
  if (c.serverConnectionId) num(out, "serverConnectionId", *c.serverConnectionId);
  switch (e.type) {
    case EventType::commandStarted:
      key(out, "command");
      append_document_string(out, e.document, o);
      break;
    case EventType::commandSucceeded:
    case EventType::commandFailed: {
      append_duration_ms(out, e.durationMicros);
      if (o.lines == Lines::commands && started != nullptr) {
        key(out, "command");
        append_document_string(out, started->document, o);
      }
      if (e.type == EventType::commandSucceeded) {
        key(out, "reply");
        append_document_string(out, e.document, o);
      } else {
        key(out, "failure");
        if (e.networkFailure())
          wire::append_json_string(out, e.message);
        else
          append_document_string(out, e.document, o);
      }
      break;
    }
    case EventType::connectionOpened:
    case EventType::topology:
      break;
    case EventType::connectionClosed:
      str(out, "reason", e.message);
      break;
  }
  out += '}';
}

bool walk_types(std::string& out, wire::BsonView doc, bool isArray, std::size_t start,
                std::size_t max, int depth);

const char* type_alias(bson_type_t t) {
  switch (t) {
    case BSON_TYPE_DOUBLE:
      return "double";
    case BSON_TYPE_UTF8:
      return "string";
    case BSON_TYPE_DOCUMENT:
      return "object";
    case BSON_TYPE_ARRAY:
      return "array";
    case BSON_TYPE_BINARY:
      return "binData";
    case BSON_TYPE_UNDEFINED:
      return "undefined";
    case BSON_TYPE_OID:
      return "objectId";
    case BSON_TYPE_BOOL:
      return "bool";
    case BSON_TYPE_DATE_TIME:
      return "date";
    case BSON_TYPE_NULL:
      return "null";
    case BSON_TYPE_REGEX:
      return "regex";
    case BSON_TYPE_DBPOINTER:
      return "dbPointer";
    case BSON_TYPE_CODE:
      return "javascript";
    case BSON_TYPE_SYMBOL:
      return "symbol";
    case BSON_TYPE_CODEWSCOPE:
      return "javascriptWithScope";
    case BSON_TYPE_INT32:
      return "int";
    case BSON_TYPE_TIMESTAMP:
      return "timestamp";
    case BSON_TYPE_INT64:
      return "long";
    case BSON_TYPE_DECIMAL128:
      return "decimal";
    case BSON_TYPE_MINKEY:
      return "minKey";
    case BSON_TYPE_MAXKEY:
      return "maxKey";
    default:
      return "unknown";
  }
}

// Past kMaxBsonDepth, or when not framed, an embedded document shows as
// its type name, like a leaf; the walk stops quietly at a corrupt element.
bool walk_types(std::string& out, wire::BsonView doc, bool isArray, std::size_t start,
                std::size_t max, int depth) {
  out += isArray ? '[' : '{';
  bool first = true;
  bool cut = false;
  wire::BsonWalk w(doc);
  wire::BsonElement e;
  while (w.next(e)) {
    if (max != 0 && out.size() - start >= max) {
      cut = true;
      break;
    }
    if (!first) out += ',';
    first = false;
    if (!isArray) {
      wire::append_json_string(out, e.key);
      out += ':';
    }
    if (e.is_document() && depth + 1 < wire::kMaxBsonDepth && wire::bson_framed(e.as_document())) {
      if (walk_types(out, e.as_document(), e.type == wire::bson_type::kArray, start, max,
                     depth + 1)) {
        cut = true;
        break;
      }
    } else {
      out += '"';
      out += type_alias(static_cast<bson_type_t>(e.type));
      out += '"';
    }
  }
  out += isArray ? ']' : '}';
  return cut;
}

}  // namespace

wire::CopyBound document_copy_bound(const RenderOptions& options) noexcept {
  if (options.maxDocumentLength == 0) return {};
  // The string rendering reads the most; the object rendering reads up to
  // maxDocumentLength. The margin covers a cut element's closing text.
  constexpr std::size_t kMargin = 64;
  return {string_budget(options.maxDocumentLength) + kMargin,
          options.redaction == Redaction::values};
}

bool append_type_json(std::string& out, wire::BsonView doc, std::size_t maxLength) {
  if (!wire::bson_framed(doc)) {
    out += "{}";
    return false;
  }
  return walk_types(out, doc, false, out.size(), maxLength, 0);
}

// Writes the 27 characters of the timestamp at p.
void put_rfc3339(char* p, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto us = duration_cast<microseconds>(t.time_since_epoch());
  // Events come in bursts within one second: the calendar part is worked
  // out once per second (per thread), only the microseconds every time.
  thread_local std::int64_t cachedSecond = std::numeric_limits<std::int64_t>::min();
  thread_local char cached[20];
  const std::int64_t second = floor<seconds>(us).count();
  if (second == cachedSecond) {
    std::memcpy(p, cached, 20);
    put_digits(p + 20, static_cast<unsigned>((us - seconds{second}).count()), 6);
    p[26] = 'Z';
    return;
  }
  const auto day = floor<days>(us);
  const year_month_day ymd{sys_days{day}};
  const std::int64_t tod = (us - day).count();  // microseconds into the day, >= 0
  const auto secs = static_cast<unsigned>(tod / 1'000'000);
  char* buf = p;
  put_digits(buf, static_cast<unsigned>(static_cast<int>(ymd.year()) % 10000), 4);
  buf[4] = '-';
  put_digits(buf + 5, static_cast<unsigned>(ymd.month()), 2);
  buf[7] = '-';
  put_digits(buf + 8, static_cast<unsigned>(ymd.day()), 2);
  buf[10] = 'T';
  put_digits(buf + 11, secs / 3600, 2);
  buf[13] = ':';
  put_digits(buf + 14, secs / 60 % 60, 2);
  buf[16] = ':';
  put_digits(buf + 17, secs % 60, 2);
  buf[19] = '.';
  put_digits(buf + 20, static_cast<unsigned>(tod % 1'000'000), 6);
  buf[26] = 'Z';
  std::memcpy(cached, buf, 20);
  cachedSecond = second;
}

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t) {
  char buf[27];
  put_rfc3339(buf, t);
  out.append(buf, sizeof buf);
}

void render_line(std::string& out, const monitor::Event& event, const RenderOptions& options,
                 const monitor::Event* started) {
  if (options.format == Format::mongodbLog)
    render_mongodb_log(out, event, options, started);
  else
    render_varanus(out, event, options, nullptr, started);
}

std::string_view RenderCache::line(const monitor::Event& event, const RenderOptions& options,
                                   const monitor::Event* started) {
  Slot* slot = nullptr;
  for (auto& s : slots_)
    if (s->options == options) {
      slot = s.get();
      break;
    }
  if (slot == nullptr) {
    slots_.push_back(std::make_unique<Slot>());
    slot = slots_.back().get();
    slot->options = options;
  }
  if (slot->generation != generation_) {
    slot->text.clear();
    if (options.format == Format::mongodbLog)
      render_mongodb_log(slot->text, event, options, started);
    else
      render_varanus(slot->text, event, options, this, started);
    slot->generation = generation_;
  }
  return slot->text;
}

RenderedEvent::RenderedEvent(const monitor::Event& event, const monitor::Event* started)
    : event_(&event), started_(started), own_(std::make_shared<RenderCache>()) {
  cache_ = own_.get();
}

}  // namespace varanus::sinks
