// OtlpSink: spans built on the sink thread, POSTed as OTLP/HTTP JSON by an
// exporter thread of its own over plain blocking-with-deadline sockets.
// See otlp.hpp for the picture.
#include "varanus/sinks/otlp.hpp"

#include <bson/bson.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <random>
#include <stdexcept>
#include <system_error>

#include "varanus/sinks/metrics.hpp"
#include "varanus/wire/host_port.hpp"
#include "varanus/wire/json.hpp"

namespace varanus::sinks {

namespace {

using clock = std::chrono::steady_clock;

bool is_hex(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

char lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// "00-<32>-<16>-<2>" exactly (55 characters); ids not all zero.
std::optional<TraceParent> parse_exact(std::string_view s) noexcept {
  if (s.size() < 55) return std::nullopt;
  // Version 00 is 55 characters; a later version may append "-...".
  if (s.size() > 55 && s[55] != '-') return std::nullopt;
  if (s[2] != '-' || s[35] != '-' || s[52] != '-') return std::nullopt;
  for (std::size_t i = 0; i < 55; ++i) {
    if (i == 2 || i == 35 || i == 52) continue;
    if (!is_hex(s[i])) return std::nullopt;
  }
  if (lower(s[0]) == 'f' && lower(s[1]) == 'f') return std::nullopt;  // version ff is invalid
  if (s.substr(0, 2) == "00" && s.size() != 55) return std::nullopt;
  TraceParent tp;
  tp.traceId.reserve(32);
  tp.spanId.reserve(16);
  for (char c : s.substr(3, 32)) tp.traceId += lower(c);
  for (char c : s.substr(36, 16)) tp.spanId += lower(c);
  if (tp.traceId == std::string(32, '0') || tp.spanId == std::string(16, '0')) return std::nullopt;
  unsigned flags = 0;
  std::from_chars(s.data() + 53, s.data() + 55, flags, 16);
  tp.flags = static_cast<std::uint8_t>(flags);
  return tp;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

// sqlcommenter URL-encodes values: "00%2D..." for '-'.
std::string url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
      unsigned v = 0;
      std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      out += static_cast<char>(v);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

void append_attr_string(std::string& out, std::string_view key, std::string_view value) {
  if (out.back() != '[') out += ',';
  out += "{\"key\":";
  wire::append_json_string(out, key);
  out += ",\"value\":{\"stringValue\":";
  wire::append_json_string(out, value);
  out += "}}";
}

void append_attr_int(std::string& out, std::string_view key, std::int64_t value) {
  if (out.back() != '[') out += ',';
  out += "{\"key\":";
  wire::append_json_string(out, key);
  // OTLP JSON: 64-bit integers are strings.
  out += ",\"value\":{\"intValue\":\"";
  out += std::to_string(value);
  out += "\"}}";
}

// "host:port", "[::1]:port" -> (host, port); port -1 when absent. Text
// that does not parse is kept whole as the host.
std::pair<std::string, std::int64_t> split_host_port(std::string_view s) {
  const wire::HostPort hp = wire::parse_host_port(s, wire::PortRule::optional);
  if (!hp.ok()) return {std::string(s), -1};
  return {std::string(hp.host), hp.port ? std::int64_t{*hp.port} : -1};
}

std::string to_hex(std::uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = kDigits[v & 0xF];
  return s;
}

std::mt19937_64& rng() {
  thread_local std::mt19937_64 gen([] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }());
  return gen;
}

std::uint64_t nonzero_random() {
  std::uint64_t v = 0;
  while (v == 0) v = rng()();
  return v;
}

std::string random_uuid() {
  std::string a = to_hex(rng()()), b = to_hex(rng()());
  a[12] = '4';                                          // version 4
  b[0] = "89ab"[static_cast<unsigned char>(b[0]) % 4];  // variant 10xx
  return a.substr(0, 8) + "-" + a.substr(8, 4) + "-" + a.substr(12, 4) + "-" + b.substr(0, 4) +
         "-" + b.substr(4, 12);
}

std::int64_t unix_nanos(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

struct Failure {
  std::optional<std::int64_t> code;
  std::string codeName;
  std::string message;
};

Failure failure_of(const monitor::Event& e) {
  Failure f;
  if (e.document.empty()) {
    f.message = e.message;
    return f;
  }
  bson_t doc;
  const wire::BsonView view{e.document.data(), static_cast<std::uint32_t>(e.document.size())};
  if (!view.init_static(&doc)) return f;
  bson_iter_t it;
  if (bson_iter_init(&it, &doc)) {
    while (bson_iter_next(&it)) {
      const std::string_view key = bson_iter_key(&it);
      if (key == "code" && BSON_ITER_HOLDS_NUMBER(&it)) {
        f.code = bson_iter_as_int64(&it);
      } else if (key == "codeName" && BSON_ITER_HOLDS_UTF8(&it)) {
        std::uint32_t len = 0;
        const char* s = bson_iter_utf8(&it, &len);
        f.codeName.assign(s, len);
      } else if (key == "errmsg" && BSON_ITER_HOLDS_UTF8(&it)) {
        std::uint32_t len = 0;
        const char* s = bson_iter_utf8(&it, &len);
        f.message.assign(s, len);
      }
    }
  }
  if (f.message.empty()) f.message = e.message;
  return f;
}

std::optional<std::string> comment_of(wire::BsonView command) {
  bson_t doc;
  if (command.empty() || !command.init_static(&doc)) return std::nullopt;
  bson_iter_t it;
  if (!bson_iter_init_find(&it, &doc, "comment") || !BSON_ITER_HOLDS_UTF8(&it)) return std::nullopt;
  std::uint32_t len = 0;
  const char* s = bson_iter_utf8(&it, &len);
  return std::string(s, len);
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

std::optional<TraceParent> parse_traceparent(std::string_view comment) noexcept {
  try {
    const std::string whole = trim(comment);
    if (auto tp = parse_exact(whole)) return tp;
    // sqlcommenter: key='value' pairs separated by commas, possibly inside
    // a /* ... */ comment.
    std::string_view s = comment;
    for (std::size_t pos = s.find("traceparent"); pos != std::string_view::npos;
         pos = s.find("traceparent", pos + 1)) {
      std::size_t i = pos + 11;
      while (i < s.size() && s[i] == ' ') ++i;
      if (i >= s.size() || s[i] != '=') continue;
      ++i;
      while (i < s.size() && s[i] == ' ') ++i;
      char quote = 0;
      if (i < s.size() && (s[i] == '\'' || s[i] == '"')) quote = s[i++];
      std::size_t end = i;
      while (end < s.size() &&
             (quote ? s[end] != quote : (s[end] != ',' && s[end] != ' ' && s[end] != '*')))
        ++end;
      if (auto tp = parse_exact(url_decode(s.substr(i, end - i)))) return tp;
    }
  } catch (...) {
  }
  return std::nullopt;
}

std::string command_collection(std::string_view commandName, wire::BsonView command) {
  bson_t doc;
  if (command.empty() || !command.init_static(&doc)) return {};
  bson_iter_t it;
  if (commandName == "getMore") {
    if (!bson_iter_init_find(&it, &doc, "collection")) return {};
  } else if (!bson_iter_init(&it, &doc) || !bson_iter_next(&it)) {
    return {};
  }
  if (!BSON_ITER_HOLDS_UTF8(&it)) return {};
  std::uint32_t len = 0;
  const char* s = bson_iter_utf8(&it, &len);
  return std::string(s, len);
}

std::optional<HttpUrl> parse_http_url(std::string_view url, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<HttpUrl> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    if (url.substr(0, 8) == "https://")
      return fail("https is not supported; send to a local collector over http://");
    return fail("expected http://HOST[:PORT][/PATH], got \"" + std::string(url) + "\"");
  }
  std::string_view rest = url.substr(kScheme.size());
  const auto slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  HttpUrl out;
  if (slash != std::string_view::npos) out.path = std::string(rest.substr(slash));
  while (!out.path.empty() && out.path.back() == '/') out.path.pop_back();
  if (hostport.empty()) return fail("no host in \"" + std::string(url) + "\"");
  const wire::HostPort hp = wire::parse_host_port(hostport, wire::PortRule::optional);
  if (!hp.ok()) return fail(hp.error + " (endpoint \"" + std::string(url) + "\")");
  if (hp.port == 0) return fail("port 0 in \"" + std::string(url) + "\"");
  out.host = std::string(hp.host);
  if (hp.port) out.port = *hp.port;
  return out;
}

std::string gzip_compress(std::string_view data) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("gzip: deflateInit2 failed");
  std::string out;
  out.resize(deflateBound(&z, static_cast<uLong>(data.size())) + 32);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const auto n = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("gzip: deflate failed");
  out.resize(n);
  return out;
}

int http_post(const HttpUrl& url, std::string_view target, std::string_view body,
              const std::vector<std::pair<std::string, std::string>>& headers,
              std::chrono::milliseconds timeout, std::string* error,
              std::optional<std::chrono::seconds>* retryAfter, int cancelFd) {
  const auto deadline = clock::now() + timeout;
  // Waits for `events` on fd, or for cancelFd to become readable: > 0 ready,
  // 0 timed out, -1 cancelled.
  auto wait = [&](int fd, short events) -> int {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    pollfd p[2] = {{fd, events, 0}, {cancelFd, POLLIN, 0}};
    const int n =
        ::poll(p, cancelFd >= 0 ? 2 : 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    if (n > 0 && cancelFd >= 0 && (p[1].revents & POLLIN) != 0) return -1;
    return n > 0 ? 1 : 0;
  };
  auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return -1;
  };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(url.port);
  if (const int rc = ::getaddrinfo(url.host.c_str(), service.c_str(), &hints, &res);
      rc != 0 || res == nullptr)
    return fail("cannot resolve " + url.host + ": " + gai_strerror(rc));
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return fail(std::string("socket: ") + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) return fail(std::string("connect: ") + std::strerror(errno));
  if (rc != 0) {
    if (const int w = wait(fd, POLLOUT); w <= 0)
      return fail(w < 0 ? "cancelled at shutdown" : "connect: timed out");
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(std::string("connect: ") + std::strerror(err));
  }
  std::string req;
  req.reserve(512 + body.size());
  req += "POST ";
  req += url.path;
  req += target;
  req += " HTTP/1.1\r\nHost: ";
  req += wire::format_host_port(url.host, url.port);
  req += "\r\nUser-Agent: varanus\r\nConnection: close\r\nContent-Length: ";
  req += std::to_string(body.size());
  req += "\r\n";
  for (const auto& [k, v] : headers) {
    req += k;
    req += ": ";
    req += v;
    req += "\r\n";
  }
  req += "\r\n";
  req.append(body.data(), body.size());
  std::size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (const int w = wait(fd, POLLOUT); w <= 0)
        return fail(w < 0 ? "cancelled at shutdown" : "send: timed out");
      continue;
    }
    return fail(std::string("send: ") + std::strerror(errno));
  }
  // The answer: status line and headers; the body is read only as far as
  // Content-Length says (its content does not matter here).
  std::string in;
  std::size_t headerEnd = std::string::npos;
  std::size_t want = std::string::npos;
  int status = -1;
  for (;;) {
    if (headerEnd == std::string::npos) {
      headerEnd = in.find("\r\n\r\n");
      if (headerEnd != std::string::npos) {
        if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0) return fail("not an HTTP answer");
        const auto sp = in.find(' ');
        std::from_chars(in.data() + sp + 1, in.data() + sp + 4, status);
        std::string head = in.substr(0, headerEnd);
        for (char& c : head) c = lower(c);
        if (const auto cl = head.find("\r\ncontent-length:"); cl != std::string::npos) {
          std::size_t v = 0;
          std::size_t i = cl + 17;
          while (i < head.size() && head[i] == ' ') ++i;
          std::from_chars(head.data() + i, head.data() + head.size(), v);
          want = headerEnd + 4 + v;
        }
        if (const auto ra = head.find("\r\nretry-after:"); ra != std::string::npos && retryAfter) {
          long v = -1;
          std::size_t i = ra + 14;
          while (i < head.size() && head[i] == ' ') ++i;
          std::from_chars(head.data() + i, head.data() + head.size(), v);
          if (v >= 0) *retryAfter = std::chrono::seconds(v);
        }
      }
    }
    if (headerEnd != std::string::npos && (want == std::string::npos || in.size() >= want))
      return status;  // the whole answer (or all we need of it)
    if (const int w = wait(fd, POLLIN); w <= 0) {
      if (status > 0) return status;
      return fail(w < 0 ? "cancelled at shutdown"
                        : "no answer within " + std::to_string(timeout.count()) + " ms");
    }
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (status > 0) return status;
    return fail(n == 0 ? "connection closed before an answer"
                       : std::string("recv: ") + std::strerror(errno));
  }
}

// ---- OtlpSink ----------------------------------------------------------------

OtlpSink::OtlpSink(OtlpOptions options, RenderOptions render, SinkFilter filter)
    : Sink("otlp:" + options.endpoint, render, std::move(filter)), options_(std::move(options)) {
  std::string err;
  auto url = parse_http_url(options_.endpoint, &err);
  if (!url) throw std::invalid_argument("otlp endpoint: " + err);
  url_ = std::move(*url);
  if (options_.maxBatchSpans == 0) options_.maxBatchSpans = 1;
  if (options_.maxQueueSpans == 0) options_.maxQueueSpans = 1;
  if (options_.instanceId.empty()) options_.instanceId = random_uuid();
  if (options_.hostName.empty()) options_.hostName = host_name();
  if (options_.serviceName.empty()) options_.serviceName = "varanus";
  resourceJson_ = "{\"attributes\":[";
  append_attr_string(resourceJson_, "service.name", options_.serviceName);
  if (!options_.serviceVersion.empty())
    append_attr_string(resourceJson_, "service.version", options_.serviceVersion);
  append_attr_string(resourceJson_, "service.instance.id", options_.instanceId);
  append_attr_string(resourceJson_, "host.name", options_.hostName);
  resourceJson_ += "]}";
  cancelFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (cancelFd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  thread_ = std::thread([this] { run(); });
}

OtlpSink::~OtlpSink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;  // close() was not called: no more requests at all
  }
  wake_.notify_all();
  if (cancelFd_ >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(cancelFd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (cancelFd_ >= 0) ::close(cancelFd_);
}

std::size_t OtlpSink::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void OtlpSink::write_(const RenderedEvent& rendered) {
  const monitor::Event& e = rendered.event();
  if (!e.isCommand()) return;
  if (e.hello != monitor::HelloKind::none && !options_.includeHellos) return;
  const std::uint64_t conn = e.connection ? e.connection->connectionId : 0;
  const std::uint64_t key = (conn << 32) ^ static_cast<std::uint32_t>(e.requestId);
  const wire::BsonView doc{e.document.empty() ? nullptr : e.document.data(),
                           static_cast<std::uint32_t>(e.document.size())};
  if (e.type == monitor::EventType::commandStarted) {
    Started s;
    s.time = e.time;
    s.collection = command_collection(e.commandName, doc);
    if (auto c = comment_of(doc)) s.parent = parse_traceparent(*c);
    if (options_.queryText && !doc.empty()) {
      if (render_options().redaction == Redaction::values)
        append_type_json(s.queryText, doc, render_options().maxDocumentLength);
      else
        wire::append_relaxed_json(s.queryText, doc, {render_options().maxDocumentLength});
    }
    s.order = ++order_;
    if (pending_.size() >= options_.maxPending) {
      // Ends never seen (a filter, a bug): forget the older half.
      const std::uint64_t cutoff = order_ - options_.maxPending / 2;
      std::erase_if(pending_, [cutoff](const auto& kv) { return kv.second.order < cutoff; });
    }
    pending_[key] = std::move(s);
    return;
  }
  const auto it = pending_.find(key);
  const Started* start = it == pending_.end() ? nullptr : &it->second;
  std::string span = span_json(e, start);
  if (it != pending_.end()) pending_.erase(it);
  bool full = false;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= options_.maxQueueSpans) {
      full = true;
    } else {
      queue_.push_back(std::move(span));
      wake = queue_.size() == 1 || queue_.size() >= options_.maxBatchSpans;
    }
  }
  if (full) {
    spansDropped_.fetch_add(1, std::memory_order_relaxed);
    count_dropped();
    return;
  }
  if (wake) wake_.notify_one();
}

std::string OtlpSink::span_json(const monitor::Event& e, const Started* start) {
  std::string& out = spanBuf_;
  out.clear();
  const auto duration = std::chrono::microseconds(e.durationMicros);
  const auto begin =
      start ? start->time
            : e.time - std::chrono::duration_cast<std::chrono::system_clock::duration>(duration);
  const auto end =
      begin + std::chrono::duration_cast<std::chrono::system_clock::duration>(duration);
  std::string collection;
  if (start) collection = start->collection;
  out += "{\"traceId\":\"";
  if (start && start->parent) {
    out += start->parent->traceId;
    out += "\",\"spanId\":\"";
    out += to_hex(nonzero_random());
    out += "\",\"parentSpanId\":\"";
    out += start->parent->spanId;
    out += "\",\"flags\":";
    // W3C trace flags, plus has-is-remote and is-remote: the parent is remote.
    out += std::to_string(0x300u | start->parent->flags);
  } else {
    out += to_hex(nonzero_random());
    out += to_hex(nonzero_random());
    out += "\",\"spanId\":\"";
    out += to_hex(nonzero_random());
    out += "\",\"flags\":";
    out += std::to_string(0x100u | 1u);  // sampled; has-is-remote (no parent)
  }
  out += ",\"name\":";
  wire::append_json_string(out,
                           collection.empty() ? e.commandName : e.commandName + " " + collection);
  out += ",\"kind\":3,\"startTimeUnixNano\":\"";  // SPAN_KIND_CLIENT
  out += std::to_string(unix_nanos(begin));
  out += "\",\"endTimeUnixNano\":\"";
  out += std::to_string(unix_nanos(end));
  out += "\",\"attributes\":[";
  append_attr_string(out, "db.system.name", "mongodb");
  if (!e.databaseName.empty()) append_attr_string(out, "db.namespace", e.databaseName);
  if (!collection.empty()) append_attr_string(out, "db.collection.name", collection);
  append_attr_string(out, "db.operation.name", e.commandName);
  if (e.connection) {
    const monitor::ConnectionInfo& c = *e.connection;
    if (auto [host, port] = split_host_port(c.server); !host.empty()) {
      append_attr_string(out, "server.address", host);
      if (port >= 0) append_attr_int(out, "server.port", port);
    }
    if (auto [host, port] = split_host_port(c.client); !host.empty()) {
      append_attr_string(out, "client.address", host);
      if (port >= 0) append_attr_int(out, "client.port", port);
    }
    if (!c.appName.empty()) append_attr_string(out, "varanus.app_name", c.appName);
    if (!c.driver.empty()) append_attr_string(out, "varanus.driver", c.driver);
    append_attr_int(out, "varanus.connection_id", static_cast<std::int64_t>(c.connectionId));
  }
  append_attr_int(out, "varanus.request_id", e.requestId);
  if (start && !start->queryText.empty())
    append_attr_string(out, "db.query.text", start->queryText);
  if (e.type == monitor::EventType::commandFailed) {
    const Failure f = failure_of(e);
    if (f.code) append_attr_string(out, "db.response.status_code", std::to_string(*f.code));
    append_attr_string(out, "error.type",
                       !f.codeName.empty() ? f.codeName
                       : f.code            ? std::to_string(*f.code)
                                           : std::string("network_error"));
    out += "],\"status\":{\"code\":2,\"message\":";  // STATUS_CODE_ERROR
    wire::append_json_string(out, f.message);
    out += "}}";
  } else {
    out += "]}";
  }
  return out;
}

std::string OtlpSink::encode_request(const std::vector<std::string>& spans) const {
  std::size_t size = resourceJson_.size() + 128;
  for (const auto& s : spans) size += s.size() + 1;
  std::string body;
  body.reserve(size);
  body += "{\"resourceSpans\":[{\"resource\":";
  body += resourceJson_;
  body += ",\"scopeSpans\":[{\"scope\":{\"name\":\"varanus\"";
  if (!options_.serviceVersion.empty()) {
    body += ",\"version\":";
    wire::append_json_string(body, options_.serviceVersion);
  }
  body += "},\"spans\":[";
  for (std::size_t i = 0; i < spans.size(); ++i) {
    if (i != 0) body += ',';
    body += spans[i];
  }
  body += "]}]}]}";
  return body;
}

void OtlpSink::run() {
  run_batches();
  {
    std::lock_guard lock(mutex_);
    exporterDone_ = true;
  }
  wake_.notify_all();
}

void OtlpSink::run_batches() {
  std::vector<std::string> batch;
  std::unique_lock lock(mutex_);
  for (;;) {
    // A batch goes when it is full, when its oldest span has waited
    // batchDelay, or at shutdown.
    if (queue_.empty() && !stopping_)
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    if (stopping_ && clock::now() >= stopDeadline_) return;  // close_() drops the rest
    const auto due = clock::now() + options_.batchDelay;
    wake_.wait_until(lock, due,
                     [&] { return stopping_ || queue_.size() >= options_.maxBatchSpans; });
    const std::size_t n = std::min(queue_.size(), options_.maxBatchSpans);
    batch.clear();
    for (std::size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    if (!batch.empty()) export_batch(batch);
    lock.lock();
  }
}

void OtlpSink::export_batch(std::vector<std::string>& spans) {
  std::string body = encode_request(spans);
  std::vector<std::pair<std::string, std::string>> headers = {{"Content-Type", "application/json"}};
  if (options_.gzip) {
    body = gzip_compress(body);
    headers.emplace_back("Content-Encoding", "gzip");
  }
  for (const auto& h : options_.headers) headers.push_back(h);
  auto backoff = options_.minBackoff;
  for (unsigned attempt = 0;; ++attempt) {
    std::string error;
    std::optional<std::chrono::seconds> retryAfter;
    const int status = http_post(url_, "/v1/traces", body, headers, options_.timeout, &error,
                                 &retryAfter, cancelFd_);
    if (status >= 200 && status < 300) {
      sent_.fetch_add(spans.size(), std::memory_order_relaxed);
      return;
    }
    postsFailed_.fetch_add(1, std::memory_order_relaxed);
    // OTLP/HTTP: 429, 502, 503, 504 are retryable; so is no connection.
    const bool retryable =
        status < 0 || status == 429 || status == 502 || status == 503 || status == 504;
    bool stopping = false;
    {
      std::lock_guard lock(mutex_);
      stopping = stopping_;
    }
    if (!retryable || attempt >= options_.maxRetries || stopping) {
      spansDropped_.fetch_add(spans.size(), std::memory_order_relaxed);
      return;
    }
    retries_.fetch_add(1, std::memory_order_relaxed);
    auto delay = backoff;
    if (retryAfter)
      delay = std::min<std::chrono::milliseconds>(
          std::max<std::chrono::milliseconds>(*retryAfter, options_.minBackoff),
          options_.maxBackoff);
    // Jitter: 50-100 % of the delay, so that many proxies do not retry in step.
    std::uniform_int_distribution<std::int64_t> jitter(delay.count() / 2, delay.count());
    delay = std::chrono::milliseconds(jitter(rng()));
    backoff = std::min(backoff * 2, options_.maxBackoff);
    std::unique_lock lock(mutex_);
    // Shutting down ends the wait: one last try (the loop sees stopping_).
    wake_.wait_for(lock, delay, [&] { return stopping_; });
  }
}

void OtlpSink::close_() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    stopDeadline_ = clock::now() + options_.closeTimeout;
  }
  wake_.notify_all();
  {
    // A request in flight past closeTimeout (a collector that never
    // answers) is cancelled rather than waited for.
    std::unique_lock lock(mutex_);
    if (!wake_.wait_until(lock, stopDeadline_, [&] { return exporterDone_; })) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(cancelFd_, &one, sizeof one);
    }
  }
  if (thread_.joinable()) thread_.join();
  // What the exporter did not take (it stops after the batch in flight).
  std::lock_guard lock(mutex_);
  if (!queue_.empty()) {
    spansDropped_.fetch_add(queue_.size(), std::memory_order_relaxed);
    queue_.clear();
  }
}

void render_otlp_metrics(std::string& out, const std::vector<const OtlpSink*>& sinks) {
  if (sinks.empty()) return;
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    std::uint64_t (*get)(const OtlpSink&);
  };
  static constexpr Family kFamilies[] = {
      {"varanus_otlp_spans_sent_total", "counter", "Spans the OTLP collector accepted",
       [](const OtlpSink& s) { return s.spans_sent(); }},
      {"varanus_otlp_spans_dropped_total", "counter",
       "Spans lost: export queue full, or their batch refused or given up after retries",
       [](const OtlpSink& s) { return s.spans_dropped(); }},
      {"varanus_otlp_posts_failed_total", "counter",
       "OTLP export requests that failed (refused, retryable status, no connection or answer)",
       [](const OtlpSink& s) { return s.posts_failed(); }},
      {"varanus_otlp_retries_total", "counter", "OTLP export requests retried after a backoff",
       [](const OtlpSink& s) { return s.retries(); }},
      {"varanus_otlp_queue_spans", "gauge", "Spans waiting for the OTLP exporter",
       [](const OtlpSink& s) { return static_cast<std::uint64_t>(s.queued()); }},
  };
  for (const Family& f : kFamilies) {
    family(out, f.name, f.type, f.help);
    for (const OtlpSink* s : sinks) {
      out += f.name;
      out += "{sink=\"";
      append_label_value(out, s->name());
      out += "\"} ";
      out += std::to_string(f.get(*s));
      out += '\n';
    }
  }
}

}  // namespace varanus::sinks
