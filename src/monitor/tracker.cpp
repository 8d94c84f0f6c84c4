// The Tracker: request/reply pairing for one client connection.
//
// Pairing: every request that expects a reply is kept in pending_ under its
// requestID; a reply is matched by its responseTo. Replies to unknown ids
// (a capture that starts mid-stream, a request we could not decode) are
// ignored. Requests with moreToCome (w:0) and legacy writes get no reply:
// they are reported succeeded at once, as drivers report them.
//
// Exhaust chains: when a reply says more replies follow (OP_MSG moreToCome,
// or an OP_REPLY with a live cursor to an OP_QUERY that set Exhaust), the
// entry is re-keyed under that reply's requestID — the responseTo of the
// next reply — and a synthetic started event opens the next round, timed
// from this reply. The stream ends with a reply that does not continue it.
#include "varanus/monitor/tracker.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "legacy.hpp"
#include "varanus/monitor/classify.hpp"
#include "varanus/monitor/summary.hpp"
#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/bson_walk.hpp"
#include "varanus/wire/command.hpp"
#include "varanus/wire/sparse.hpp"

namespace varanus::monitor {
namespace {

std::int64_t micros_between(std::chrono::steady_clock::time_point a,
                            std::chrono::steady_clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
}

std::int32_t load_le32(const std::uint8_t* p) noexcept {
  return static_cast<std::int32_t>(
      static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
      static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
}

std::string_view utf8_at(wire::BsonView doc, std::string_view dotted) {
  wire::BsonElement e;
  if (!wire::BsonWalk::find_path(doc, dotted, e) || e.type != wire::bson_type::kUtf8) return {};
  return e.as_string();
}

bool has_key(wire::BsonView body, const char* key) {
  wire::BsonElement e;
  return wire::BsonWalk::find(body, key, e);
}

std::string string_key(wire::BsonView body, const char* key) {
  wire::BsonElement e;
  if (!wire::BsonWalk::find(body, key, e) || e.type != wire::bson_type::kUtf8) return {};
  return std::string(e.as_string());
}

}  // namespace

std::size_t sparse_budget(const TrackerOptions& o) noexcept {
  constexpr std::size_t kMin = 64 * 1024;
  if (!o.captureDocuments) return kMin;  // only small fields are read
  // Whole documents, or type names (shown past a string of any length):
  // every byte may be needed.
  if (o.documentBound.unlimited() || o.documentBound.typeNames) return 0;
  // Far more than any rendering of jsonLength characters reads (a BSON
  // byte renders to more than 1/32 of a character of JSON), so events
  // keep the same bounded copies (tests/wire/sparse_test.cpp).
  return std::max(kMin, 32 * o.documentBound.jsonLength);
}

Tracker::Tracker(ConnectionInfoPtr info, EventOutput& out, TrackerOptions options)
    : info_(std::move(info)),
      out_(out),
      options_(options),
      fromClient_(options.maxMessageSize, sparse_budget(options)),
      fromServer_(options.maxMessageSize, sparse_budget(options)) {}

Event Tracker::make_event(EventType type, Clock now) const {
  Event e;
  e.type = type;
  e.time = now.wall;
  e.connection = info_;
  return e;
}

template <class P>
Event Tracker::command_event(EventType type, std::int32_t requestId, P&& p, Clock now) const {
  Event e = make_event(type, now);
  e.requestId = requestId;
  e.commandName = std::forward<P>(p).commandName;
  e.databaseName = std::forward<P>(p).databaseName;
  e.collection = std::forward<P>(p).collection;
  e.requestBytes = p.requestBytes;
  e.durationMicros = micros_between(p.start, now.mono);
  e.hello = p.hello;
  // A request that allows an exhaust stream opens one; its terminal event
  // is part of a stream only if a reply continued it.
  e.exhaust = p.exhaust || (type == EventType::commandStarted && p.exhaustAllowed);
  e.awaited = p.awaited;
  e.redacted = p.redacted;
  e.compressor = p.compressor;
  return e;
}

void Tracker::opened(Clock now) {
  publish(make_event(EventType::connectionOpened, now));
}

void Tracker::client_data(std::span<const std::uint8_t> bytes, Clock now) {
  bytesFromClient_ += bytes.size();
  feed<&Tracker::on_request>(fromClient_, bytes, "client framing", now);
}

void Tracker::server_data(std::span<const std::uint8_t> bytes, Clock now) {
  bytesFromServer_ += bytes.size();
  feed<&Tracker::on_reply>(fromServer_, bytes, "upstream framing", now);
}

template <void (Tracker::*Handle)(std::span<const std::uint8_t>, Clock)>
void Tracker::feed(wire::FrameReader& reader, std::span<const std::uint8_t> bytes,
                   std::string_view where, Clock now) {
  if (!inspecting_ || closed_) return;
  reader.feed(bytes);
  for (;;) {
    const std::uint64_t before = reader.consumed();
    auto next = reader.next();
    if (next.status == wire::FrameStatus::need_more) return;
    if (next.status == wire::FrameStatus::error) return stop(where, *next.error, now);
    frameBytes_ = static_cast<std::uint32_t>(reader.consumed() - before);
    frameReduced_ = next.reduced;
    ++stats_.frames;
    (this->*Handle)(next.frame, now);
    if (!inspecting_) return;
  }
}

void Tracker::publish(Event&& e) {
  out_.publish(std::move(e));
  if (spare_.capacity() == 0 && e.document.capacity() <= kReusableDocumentCapacity) {
    spare_ = std::move(e.document);
    spare_.clear();
  }
}

void Tracker::start_command(Pending p, std::int32_t requestId, wire::BoundedBytes command,
                            bool unacked, wire::BsonBytes impliedReply, Clock now) {
  if (!unacked && options_.maxPendingRequests != 0 &&
      pending_.size() >= options_.maxPendingRequests && !pending_.contains(requestId)) {
    // A client pipelining without reading replies (or an upstream that
    // stopped answering): each pending request costs memory until its
    // reply comes. Past the bound, stop inspecting; the relay goes on.
    return halt(StopCause::backlog,
                "client: more than " + std::to_string(options_.maxPendingRequests) +
                    " requests without a reply",
                now);
  }
  ++stats_.commands;
  p.start = now.mono;
  Event started = command_event(EventType::commandStarted, requestId, p, now);
  started.unacknowledged = unacked;
  if (options_.captureDocuments) {
    if (p.redacted) {
      started.document = detail::empty_document();
    } else {
      started.document = std::move(command.bytes);
      started.documentCut = command.cut;
      started.documentOmitted = command.omitted;
    }
  }
  publish(std::move(started));

  if (unacked) {
    Event done = command_event(EventType::commandSucceeded, requestId, std::move(p), now);
    done.unacknowledged = true;
    if (options_.captureDocuments)
      done.document = done.redacted ? detail::empty_document() : std::move(impliedReply);
    publish(std::move(done));
    return;
  }
  p.seq = ++seq_;
  if (auto it = pending_.find(requestId); it != pending_.end()) {
    // A driver reused a requestID before its reply: the older request can no
    // longer be paired. Fail it so it still gets its one terminal event.
    Pending old = std::exchange(it->second, std::move(p));
    Event failed = command_event(EventType::commandFailed, requestId, std::move(old), now);
    failed.message = "requestID reused by the client before a reply came";
    publish(std::move(failed));
    return;
  }
  if (spareNode_.empty()) {
    pending_.emplace(requestId, std::move(p));
  } else {
    // The node of the last reply's request: no allocation per command.
    spareNode_.key() = requestId;
    spareNode_.mapped() = std::move(p);
    pending_.insert(std::move(spareNode_));
  }
}

void Tracker::learn_handshake(wire::BsonView body) {
  auto app = utf8_at(body, "client.application.name");
  auto name = utf8_at(body, "client.driver.name");
  auto version = utf8_at(body, "client.driver.version");
  if (app.empty() && name.empty()) return;
  auto next = std::make_shared<ConnectionInfo>(*info_);
  next->appName = std::string(app);
  next->driver = std::string(name);
  if (!version.empty()) {
    next->driver += ' ';
    next->driver += version;
  }
  info_ = std::move(next);
}

void Tracker::learn_server_connection_id(wire::BsonView reply) {
  wire::BsonElement e;
  if (!wire::BsonWalk::find(reply, "connectionId", e)) return;
  std::int64_t id = 0;
  if (e.type == wire::bson_type::kInt32) {
    id = e.as_int32();
  } else if (e.type == wire::bson_type::kInt64) {
    id = e.as_int64();
  } else if (e.type == wire::bson_type::kDouble) {
    const double d = e.as_double();
    if (!(d >= -9.0e18 && d <= 9.0e18)) return;  // NaN or beyond int64: no id
    id = static_cast<std::int64_t>(d);
  } else {
    return;
  }
  if (info_->serverConnectionId == id) return;
  auto next = std::make_shared<ConnectionInfo>(*info_);
  next->serverConnectionId = id;
  info_ = std::move(next);
}

namespace {

wire::Error malformed_document(std::string_view which) {
  return wire::Error{wire::Errc::invalid_bson, 0,
                     "the " + std::string(which) + " document is not valid BSON"};
}

// Decompression bomb guard. The relay forwards compressed bytes as they
// are; only inspection inflates them, on the I/O thread. A frame claiming
// more than kBombFloor bytes and more than kMaxCompressionRatio times its
// compressed payload (1.5 kB of zstd claiming 47 MB) is refused from its
// header, before anything is allocated or inflated: decompression work
// stays under 256 x the bytes received (+ 1 MiB a frame). Snappy's format
// cannot expand that far; zlib and zstd can.
constexpr std::int64_t kBombFloor = 1 << 20;
constexpr std::int64_t kMaxCompressionRatio = 256;

std::optional<wire::Error> compression_bomb(std::span<const std::uint8_t> frame) {
  constexpr std::size_t kUsizeAt = 20;    // header, originalOpcode
  constexpr std::size_t kPayloadAt = 25;  // ..., uncompressedSize, compressorId
  if (frame.size() < kPayloadAt) return std::nullopt;
  const auto le32 = [&](std::size_t at) {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(frame[at]) |
                                     static_cast<std::uint32_t>(frame[at + 1]) << 8 |
                                     static_cast<std::uint32_t>(frame[at + 2]) << 16 |
                                     static_cast<std::uint32_t>(frame[at + 3]) << 24);
  };
  if (le32(12) != static_cast<std::int32_t>(wire::OpCode::compressed)) return std::nullopt;
  const std::int64_t usize = le32(kUsizeAt);
  const auto packed =
      static_cast<std::int64_t>(std::max<std::size_t>(frame.size() - kPayloadAt, 1));
  if (usize <= kBombFloor || usize / packed < kMaxCompressionRatio) return std::nullopt;
  return wire::Error{wire::Errc::uncompressed_size_too_large, kUsizeAt,
                     "uncompressedSize " + std::to_string(usize) + " is over " +
                         std::to_string(kMaxCompressionRatio) + " x the " + std::to_string(packed) +
                         " compressed bytes (decompression bomb guard)"};
}

}  // namespace

wire::Result<wire::Message> Tracker::decode_frame(std::span<const std::uint8_t> frame,
                                                  const wire::DecodeOptions& opts,
                                                  std::vector<std::uint8_t>& keep) {
  // A compressed OP_MSG large enough that the FrameReader would have
  // reduced it sparsely, were it not compressed: inflated as a stream into
  // the same reduction, never whole, and only as far as it is needed.
  const std::size_t budget = sparse_budget(options_);
  constexpr std::size_t kPayloadAt = 25;
  if (budget == 0 || frame.size() < kPayloadAt ||
      load_le32(frame.data() + 12) != static_cast<std::int32_t>(wire::OpCode::compressed) ||
      load_le32(frame.data() + 16) != static_cast<std::int32_t>(wire::OpCode::msg))
    return wire::decode(frame, opts);
  const std::int32_t usize = load_le32(frame.data() + 20);
  if (usize < 0 || (static_cast<std::size_t>(usize) + 16) / 4 <= budget)
    return wire::decode(frame, opts);
  auto reduced = wire::inflate_sparse(frame, budget, options_.maxMessageSize);
  if (!reduced) return reduced.error();
  keep = std::move(reduced->frame);
  ++sparseInflated_;
  frameReduced_ = frameReduced_ || reduced->reduced;
  // What was never inflated goes back to the connection's budget.
  if (options_.decompressBytesPerSecond != 0) {
    const double cap = static_cast<double>(std::max<std::uint64_t>(
        options_.decompressBytesPerSecond, static_cast<std::uint64_t>(options_.maxMessageSize)));
    decompressTokens_ =
        std::min(cap, decompressTokens_ +
                          static_cast<double>(static_cast<std::size_t>(usize) - reduced->inflated));
  }
  stats_.inflatedBytes += reduced->inflated;
  auto decoded = wire::decode(keep, opts);
  if (decoded) decoded->compressor = reduced->compressor;
  return decoded;
}

void Tracker::on_request(std::span<const std::uint8_t> frame, Clock now) {
  wire::DecodeOptions opts;
  opts.maxMessageSize = options_.maxMessageSize;
  opts.validateBson = false;  // iterators bound-check; a full walk costs per byte
  // Nor a CRC-32C over every checksummed message: the upstream verifies it
  // and rejects a bad one; an observer only needs the bytes to be in bounds.
  opts.verifyChecksum = false;
  if (auto bomb = compression_bomb(frame)) return stop("client message", *bomb, now);
  // Over budget: relayed uninspected; its reply (if any) finds no request.
  if (!afford_decompression(frame, now)) return;
  std::vector<std::uint8_t> inflated;  // a large compressed message, reduced
  auto decoded = decode_frame(frame, opts, inflated);
  if (!decoded) return stop("client message", decoded.error(), now);
  const wire::Message& msg = *decoded;
  const std::int32_t requestId = msg.header.requestId;

  Pending p;
  p.compressor = msg.compressor;
  p.requestBytes = frameBytes_;

  if (auto view = wire::command_view(msg); view.ok()) {
    // The command document is walked once (it is small: bulk documents
    // travel in sequences): malformed BSON is a decode error, never an
    // event with `command: {}`.
    if (!view->body.empty() && !wire::validate_bson(view->body))
      return stop("client message", malformed_document("command"), now);
    p.commandName = std::string(view->name);
    p.databaseName = std::string(view->database);
    p.collection = std::string(command_collection(view->name, view->body));
    p.exhaustAllowed = view->exhaustAllowed;
    p.redacted = should_redact(view->name, view->body);
    if (msg.opCode == static_cast<std::int32_t>(wire::OpCode::query))
      p.legacy = Pending::Legacy::command;
    if (is_hello(view->name)) {
      if (!handshakeSeen_) {
        p.hello = HelloKind::handshake;
        learn_handshake(view->body);
      } else if (view->database == "admin" && !has_key(view->body, "lsid")) {
        p.hello = HelloKind::heartbeat;
      }  // else an application's own hello on a pool connection: a command
      p.awaited = p.hello == HelloKind::heartbeat && has_key(view->body, "topologyVersion") &&
                  has_key(view->body, "maxAwaitTimeMS");
    }
    handshakeSeen_ = true;
    if (p.exhaustAllowed && p.commandName == "getMore")
      p.ns = p.databaseName + "." + string_key(view->body, "collection");
    wire::BoundedBytes command;
    if (options_.captureDocuments && !p.redacted) {
      command = wire::bounded_merged_command(*view, options_.documentBound, take_spare());
      if (p.exhaustAllowed && p.hello != HelloKind::none) p.streamCommand = command.bytes;
    }
    return start_command(
        std::move(p), requestId, std::move(command), view->moreToCome,
        view->moreToCome && options_.captureDocuments ? detail::ok_reply() : wire::BsonBytes{},
        now);
  }

  // Legacy opcodes, upconverted to the commands drivers report for them.
  const bool docs = options_.captureDocuments;
  const wire::BsonBytes none;
  // Documents the tracker builds (legacy upconversions), bounded like copies.
  auto keep = [&](wire::BsonBytes doc) {
    return wire::bounded_copy(std::move(doc), options_.documentBound);
  };
  if (auto* q = std::get_if<wire::OpQuery>(&msg.body)) {
    p.commandName = "find";
    p.databaseName = std::string(q->database());
    p.legacy = Pending::Legacy::find;
    p.ns = std::string(q->fullCollectionName);
    p.collection = std::string(namespace_collection(p.ns));
    p.exhaustAllowed = q->exhaust();
    handshakeSeen_ = true;
    return start_command(std::move(p), requestId, keep(docs ? detail::find_from_query(*q) : none),
                         false, {}, now);
  }
  if (auto* g = std::get_if<wire::OpGetMore>(&msg.body)) {
    p.commandName = "getMore";
    p.ns = std::string(g->fullCollectionName);
    p.databaseName = p.ns.substr(0, p.ns.find('.'));
    p.collection = std::string(namespace_collection(p.ns));
    p.legacy = Pending::Legacy::getMore;
    return start_command(std::move(p), requestId, keep(docs ? detail::getmore_from_op(*g) : none),
                         false, {}, now);
  }
  if (auto* k = std::get_if<wire::OpKillCursors>(&msg.body)) {
    p.commandName = "killCursors";
    return start_command(std::move(p), requestId,
                         keep(docs ? detail::killcursors_from_op(*k) : none), true,
                         docs ? detail::killcursors_reply(*k) : none, now);
  }
  auto legacy_write = [&](const char* name, std::string_view ns, wire::BsonBytes command) {
    p.commandName = name;
    p.databaseName = std::string(ns.substr(0, ns.find('.')));
    p.collection = std::string(namespace_collection(ns));
    start_command(std::move(p), requestId, keep(std::move(command)), true, detail::ok_reply(), now);
  };
  if (auto* ins = std::get_if<wire::OpInsert>(&msg.body))
    return legacy_write("insert", ins->fullCollectionName,
                        docs ? detail::insert_from_op(*ins) : wire::BsonBytes{});
  if (auto* up = std::get_if<wire::OpUpdate>(&msg.body))
    return legacy_write("update", up->fullCollectionName,
                        docs ? detail::update_from_op(*up) : wire::BsonBytes{});
  if (auto* del = std::get_if<wire::OpDelete>(&msg.body))
    return legacy_write("delete", del->fullCollectionName,
                        docs ? detail::delete_from_op(*del) : wire::BsonBytes{});
  // Anything else from a client (a reply opcode, an unknown opcode) is
  // relayed but is not a command; nothing to pair.
}

void Tracker::on_reply(std::span<const std::uint8_t> frame, Clock now) {
  wire::DecodeOptions opts;
  opts.maxMessageSize = options_.maxMessageSize;
  opts.validateBson = false;
  opts.verifyChecksum = false;
  if (auto bomb = compression_bomb(frame)) return stop("upstream message", *bomb, now);
  if (!afford_decompression(frame, now)) {
    // Over budget: the request this answers cannot be told apart from a
    // success or a failure; it ends, failed, saying why (an exhaust stream
    // it continued ends with it: later replies find no request).
    const auto responseTo = static_cast<std::int32_t>(load_le32(frame.data() + 8));
    if (auto found = pending_.find(responseTo); found != pending_.end()) {
      auto node = pending_.extract(found);
      Event failed =
          command_event(EventType::commandFailed, responseTo, std::move(node.mapped()), now);
      failed.replyBytes = frameBytes_;
      failed.message = "reply not inspected: " + throttleReason_;
      spareNode_ = std::move(node);
      publish(std::move(failed));
    }
    return;
  }
  std::vector<std::uint8_t> inflated;
  auto decoded = decode_frame(frame, opts, inflated);
  if (!decoded) return stop("upstream message", decoded.error(), now);
  const wire::Message& msg = *decoded;
  if (const auto* m = std::get_if<wire::OpMsg>(&msg.body);
      m != nullptr && !m->body.empty() && !wire::validate_bson(m->body))
    return stop("upstream message", malformed_document("reply"), now);

  const bool isReply = std::holds_alternative<wire::OpMsg>(msg.body) ||
                       std::holds_alternative<wire::OpReply>(msg.body) ||
                       std::holds_alternative<wire::OpCommandReply>(msg.body);
  auto found = pending_.find(msg.header.responseTo);
  if (!isReply || found == pending_.end()) return;  // unpaired: nothing we can report
  auto node = pending_.extract(found);
  Pending p = std::move(node.mapped());
  spareNode_ = std::move(node);  // reused by the next request

  // The reply document, whether it succeeded, and whether the stream goes on.
  wire::BsonView replyDoc;
  wire::BsonBytes built;  // when the reply is upconverted
  bool succeeded = false;
  bool more = false;
  std::int64_t cursorId = 0;
  if (auto* m = std::get_if<wire::OpMsg>(&msg.body)) {
    replyDoc = m->body;
    succeeded = reply_succeeded(replyDoc);
    more = m->moreToCome();
    if (more) cursorId = detail::reply_cursor_id(replyDoc);
  } else if (auto* r = std::get_if<wire::OpReply>(&msg.body)) {
    const bool cursorOp = p.legacy == Pending::Legacy::find || p.legacy == Pending::Legacy::getMore;
    if (r->queryFailure() || !cursorOp) {
      if (!r->documents.empty()) replyDoc = r->documents.front();
      succeeded = !r->queryFailure() && reply_succeeded(replyDoc);
    } else {
      succeeded = true;
      if (options_.captureDocuments) {
        built = detail::cursor_reply(*r, p.ns, p.legacy == Pending::Legacy::find);
        replyDoc = wire::BsonView{built.data(), static_cast<std::uint32_t>(built.size())};
      }
      more = p.exhaustAllowed && r->cursorId != 0;
      cursorId = r->cursorId;
    }
  } else {
    replyDoc = std::get<wire::OpCommandReply>(msg.body).commandReply;
    succeeded = reply_succeeded(replyDoc);
  }

  if (p.hello != HelloKind::none && succeeded) learn_server_connection_id(replyDoc);

  Event done = command_event(succeeded ? EventType::commandSucceeded : EventType::commandFailed,
                             msg.header.responseTo, p, now);
  done.replyBytes = frameBytes_;
  done.exhaust = done.exhaust || more;
  done.compressor = msg.compressor;  // the reply's own
  if (options_.captureDocuments) {
    if (p.redacted)
      done.document = succeeded ? detail::empty_document() : detail::redacted_failure(replyDoc);
    else if (!built.empty() && replyDoc.data == built.data())
      done.document = std::move(built);
    else if (!succeeded || replyDoc.empty())
      done.document = detail::copy_of(replyDoc);
    else {
      wire::BoundedBytes copy = wire::bounded_copy(replyDoc, options_.documentBound, take_spare());
      done.document = std::move(copy.bytes);
      done.documentCut = copy.cut;
      done.documentOmitted = copy.omitted;
    }
  } else if (!succeeded) {
    // Failure details are needed even without documents.
    done.document = p.redacted ? detail::redacted_failure(replyDoc) : detail::copy_of(replyDoc);
  }
  if (options_.replySummary && !p.redacted) {
    if (auto* r = std::get_if<wire::OpReply>(&msg.body); r != nullptr && !r->queryFailure() &&
                                                         p.legacy != Pending::Legacy::none &&
                                                         p.legacy != Pending::Legacy::command) {
      done.summary.nReturned = static_cast<std::int32_t>(r->documents.size());
      done.summary.hasCursor = true;
      done.summary.cursorId = r->cursorId;
    } else {
      done.summary = summarize_reply(p.commandName, replyDoc);
      // A sparse frame left batch elements out: their number is unknown.
      if (frameReduced_) done.summary.nReturned = -1;
    }
  }
  publish(std::move(done));

  if (!more) return;
  // The stream continues: open the next round, keyed by this reply's id.
  Pending next = std::move(p);
  next.exhaust = true;
  next.exhaustAllowed = true;
  next.compressor = msg.compressor;
  next.requestBytes = 0;  // a streamed round: no request
  wire::BsonBytes command;
  if (next.hello != HelloKind::none) {
    command = next.streamCommand;
  } else {
    if (next.legacy == Pending::Legacy::find) next.legacy = Pending::Legacy::getMore;
    next.commandName = "getMore";
    auto dot = next.ns.find('.');
    std::string_view coll =
        dot == std::string::npos ? std::string_view{} : std::string_view(next.ns).substr(dot + 1);
    if (options_.captureDocuments) command = detail::getmore_command(cursorId, coll);
  }
  start_command(std::move(next), msg.header.requestId, wire::BoundedBytes{std::move(command)},
                false, {}, now);
}

void Tracker::fail_all(std::string_view message, Clock now) {
  std::vector<std::pair<std::int32_t, Pending*>> order;
  order.reserve(pending_.size());
  for (auto& [id, p] : pending_) order.emplace_back(id, &p);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.second->seq < b.second->seq; });
  for (auto& [id, p] : order) {
    Event failed = command_event(EventType::commandFailed, id, std::move(*p), now);
    failed.message = std::string(message);
    publish(std::move(failed));
  }
  pending_.clear();
}

void Tracker::stop(std::string_view where, const wire::Error& error, Clock now) {
  if (!inspecting_) return;
  ++stats_.decodeErrors;
  const bool oversized = error.code == wire::Errc::length_too_large ||
                         error.code == wire::Errc::uncompressed_size_too_large;
  halt(oversized ? StopCause::oversized : StopCause::malformed,
       std::string(where) + ": " + error.message(), now);
}

void Tracker::halt(StopCause cause, std::string reason, Clock now) {
  if (!inspecting_) return;
  inspecting_ = false;
  stopCause_ = cause;
  stopReason_ = std::move(reason);
  fail_all("inspection stopped: " + stopReason_, now);
}

bool Tracker::afford_decompression(std::span<const std::uint8_t> frame, Clock now) {
  const std::uint64_t rate = options_.decompressBytesPerSecond;
  constexpr std::size_t kUsizeAt = 20;
  if (rate == 0 || frame.size() < kUsizeAt + 4 ||
      load_le32(frame.data() + 12) != static_cast<std::int32_t>(wire::OpCode::compressed))
    return true;
  const std::int32_t usize = load_le32(frame.data() + kUsizeAt);
  if (usize <= 0) return true;  // decode says what is wrong with it
  // A token bucket of output bytes: refilled at `rate`, holding a second's
  // worth and never less than one frame of the largest size.
  const double cap = static_cast<double>(
      std::max<std::uint64_t>(rate, static_cast<std::uint64_t>(options_.maxMessageSize)));
  if (!decompressPrimed_) {
    decompressPrimed_ = true;
    decompressTokens_ = cap;
    decompressRefill_ = now.mono;
  } else if (now.mono > decompressRefill_) {
    const double seconds = std::chrono::duration<double>(now.mono - decompressRefill_).count();
    decompressTokens_ = std::min(cap, decompressTokens_ + seconds * static_cast<double>(rate));
    decompressRefill_ = now.mono;
  }
  if (decompressTokens_ >= static_cast<double>(usize)) {
    decompressTokens_ -= static_cast<double>(usize);
    return true;
  }
  ++stats_.uninspectedCompressed;
  if (throttleReason_.empty())
    throttleReason_ = "compressed frames past the decompression budget (" + std::to_string(rate) +
                      " bytes a second a connection) are relayed without inspection";
  return false;
}

bool Tracker::quiescent() const noexcept {
  if (!inspecting_ || closed_) return false;
  if (fromClient_.consumed() != bytesFromClient_ || fromServer_.consumed() != bytesFromServer_)
    return false;
  for (const auto& entry : pending_)
    if (entry.second.hello != HelloKind::heartbeat) return false;
  return true;
}

void Tracker::closed(std::string_view reason, Clock now) {
  if (closed_) return;
  closed_ = true;
  fail_all(reason, now);
  Event e = make_event(EventType::connectionClosed, now);
  e.message = std::string(reason);
  e.bytesFromClient = bytesFromClient_;
  e.bytesFromServer = bytesFromServer_;
  e.commands = stats_.commands;
  publish(std::move(e));
}

}  // namespace varanus::monitor
