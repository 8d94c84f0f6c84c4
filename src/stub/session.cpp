#include "session.hpp"

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <mutex>

#include "handshake.hpp"
#include "varanus/wire/command.hpp"

namespace varanus::stub {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
namespace {
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

// requestIDs of the stub's replies, unique across the process as mongod's are.
std::atomic<std::int32_t> g_request_id{1};

std::int64_t reply_cursor_id(const Doc& reply) {
  bson_iter_t it;
  if (!find_path(reply.get(), "cursor.id", &it)) return 0;
  return as_int64(it).value_or(0);
}

bool reply_ok(const Doc& reply) {
  bson_iter_t it;
  return find(reply.get(), "ok", &it) && as_bool(it);
}

// Legacy query failures carry {$err, code} and the QueryFailure flag.
wire::Frame query_failure(std::int32_t responseTo, const CommandError& e) {
  Doc d;
  append_utf8(d.get(), "$err", e.errmsg);
  BSON_APPEND_INT32(d.get(), "code", e.code);
  std::array<BsonView, 1> docs = {d.view()};
  return wire::build_op_reply(0, responseTo, wire::kReplyQueryFailure, 0, 0, docs);
}

// The filter and sort of a legacy query, bare or {$query: ..., $orderby: ...}.
// (Not in a coroutine: bson_t and bson_iter_t are over-aligned types that
// coroutine frames do not align.)
FindSpec legacy_query_spec(BsonView query) {
  StaticDoc doc(query);
  FindSpec spec;
  bson_iter_t it;
  if (find(doc.get(), "$query", &it) && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    spec.filter = sub_view(it);
    spec.sort = get_document(doc.get(), "$orderby");
  } else {
    spec.filter = query;
  }
  return spec;
}

wire::Frame op_reply(std::int32_t responseTo, const std::vector<BsonBytes>& docs,
                     std::int64_t cursorId, std::int32_t startingFrom, std::int32_t flags = 0) {
  std::vector<BsonView> views;
  views.reserve(docs.size());
  for (const auto& d : docs) views.push_back(view_of(d));
  return wire::build_op_reply(0, responseTo, flags, cursorId, startingFrom, views);
}

}  // namespace

Session::Session(tcp::socket socket, ServerState& state, int member, asio::ssl::context* tls)
    : socket_(std::move(socket)), state_(state), ctx_{state, info_} {
  if (tls) tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *tls);
  info_.connectionId = state.nextConnectionId.fetch_add(1);
  info_.member = member;
  boost::system::error_code ec;
  auto peer = socket_.remote_endpoint(ec);
  if (!ec) info_.peer = peer.address().to_string() + ":" + std::to_string(peer.port());
  socket_.set_option(tcp::no_delay(true), ec);
  ++state.connectionsCurrent;
  ++state.connectionsTotal;
}

Session::~Session() {
  --state_.connectionsCurrent;
}

FaultSettings Session::faults() const {
  return info_.faults ? *info_.faults : state_.faults.get();
}

std::int32_t Session::next_request_id() {
  std::int32_t id = g_request_id.fetch_add(1, std::memory_order_relaxed);
  // Skip 0 and negatives after wrap-around.
  while (id <= 0) {
    g_request_id.store(1);
    id = g_request_id.fetch_add(1);
  }
  return id;
}

void Session::close(bool reset) {
  std::lock_guard lock(closeMu_);
  boost::system::error_code ec;
  if (reset) socket_.set_option(tcp::socket::linger(true, 0), ec);
  socket_.close(ec);
}

void Session::kill() {
  // Only a shutdown here: the socket object belongs to this session's thread
  // (which closes it); the descriptor stays valid while closeMu_ is held.
  std::lock_guard lock(closeMu_);
  if (socket_.is_open()) ::shutdown(socket_.native_handle(), SHUT_RDWR);
}

asio::awaitable<void> Session::run(std::shared_ptr<Session> self) {
  co_await self->serve();
}

asio::awaitable<void> Session::serve() {
  std::array<std::uint8_t, 64 * 1024> buf;
  if (tls_) {
    auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, nothrow);
    if (hec) {
      std::fprintf(stderr, "varanus-stub: conn%lld: TLS handshake failed: %s\n",
                   static_cast<long long>(info_.connectionId), hec.message().c_str());
      close(false);
      co_return;
    }
  }
  for (;;) {
    auto [ec, n] = tls_ ? co_await tls_->async_read_some(asio::buffer(buf), nothrow)
                        : co_await socket_.async_read_some(asio::buffer(buf), nothrow);
    if (ec) break;
    reader_.feed({buf.data(), n});
    for (;;) {
      auto next = reader_.next();
      if (next.status == wire::FrameStatus::need_more) break;
      if (next.status == wire::FrameStatus::error) {
        std::fprintf(stderr, "varanus-stub: conn%lld: bad frame: %s\n",
                     static_cast<long long>(info_.connectionId), next.error->message().c_str());
        close(false);
        co_return;
      }
      if (!co_await handle_frame(next.frame)) co_return;
    }
  }
  close(false);
}

asio::awaitable<bool> Session::handle_frame(std::span<const std::uint8_t> frame) {
  ++messages_;
  ++info_.messagesSinceFaults;
  FaultSettings f = faults();
  std::int64_t count = info_.faults ? info_.messagesSinceFaults : messages_;
  if (f.closeAfter > 0 && count >= f.closeAfter) {
    // The N-th message is never answered: the client sees the connection drop.
    close(f.reset);
    co_return false;
  }
  auto decoded = wire::decode(frame);
  if (!decoded) {
    std::fprintf(stderr, "varanus-stub: conn%lld: cannot decode message: %s\n",
                 static_cast<long long>(info_.connectionId), decoded.error().message().c_str());
    close(false);
    co_return false;
  }
  const wire::Message& m = *decoded;
  auto& counters = state_.counters;
  if (m.compressor) ++counters.compressedIn[static_cast<std::size_t>(*m.compressor)];
  if (m.opCode == static_cast<std::int32_t>(wire::OpCode::msg)) {
    ++counters.opMsgIn;
    if (std::get<wire::OpMsg>(m.body).moreToCome()) ++counters.moreToComeIn;
  } else if (m.opCode == static_cast<std::int32_t>(wire::OpCode::query)) {
    ++counters.opQueryIn;
  }
  if (state_.options.verbose) {
    std::fprintf(stderr, "varanus-stub: conn%lld: %.*s requestID %d\n",
                 static_cast<long long>(info_.connectionId),
                 static_cast<int>(wire::opcode_name(m.opCode).size()),
                 wire::opcode_name(m.opCode).data(), m.header.requestId);
  }
  switch (static_cast<wire::OpCode>(m.opCode)) {
    case wire::OpCode::msg:
      co_return co_await handle_op_msg(m);
    case wire::OpCode::query:
      co_return co_await handle_op_query(m);
    case wire::OpCode::get_more:
      co_return co_await handle_op_get_more(m);
    case wire::OpCode::kill_cursors:
      for (auto id : std::get<wire::OpKillCursors>(m.body).cursorIds) state_.cursors.kill(id);
      co_return true;  // OP_KILL_CURSORS has no reply
    case wire::OpCode::insert:
    case wire::OpCode::update:
    case wire::OpCode::del:
      // Removed from MongoDB 6.0 and never answered: ignored.
      co_return true;
    default:
      std::fprintf(stderr, "varanus-stub: conn%lld: unexpected opcode %d, closing\n",
                   static_cast<long long>(info_.connectionId), m.opCode);
      close(false);
      co_return false;
  }
}

asio::awaitable<bool> Session::handle_op_msg(const wire::Message& m) {
  const std::int32_t requestId = m.header.requestId;
  auto view = wire::command_view(m);
  const auto& msg = std::get<wire::OpMsg>(m.body);
  CommandInput in;
  if (view) {
    in.name = std::string(view->name);
    in.db = std::string(view->database);
    in.body = view->body;
    in.sequences = &msg.sequences;
  }
  std::optional<wire::Compressor> c = m.compressor;
  if (c && never_compressed(in.name)) c.reset();

  Doc reply;
  if (!view || in.name.empty()) {
    reply = error_reply(CommandError::failed_to_parse("empty command"));
  } else if (in.db.empty()) {
    reply = error_reply(40571, "Location40571", "OP_MSG requests require a $db argument");
  } else if (is_hello(in.name) && await_spec(in.body).awaitable) {
    co_return co_await stream_hello(m, in, msg.exhaustAllowed());
  } else {
    CommandResult r = run_command(ctx_, in);
    if (r.delay.count() > 0) co_await sleep_for(r.delay);
    if (in.name == "getMore" && msg.exhaustAllowed() && !msg.moreToCome() && reply_ok(r.reply) &&
        reply_cursor_id(r.reply) != 0) {
      co_return co_await exhaust_get_more(m, in, std::move(r.reply), c);
    }
    reply = std::move(r.reply);
  }
  if (msg.moreToCome()) co_return true;  // unacknowledged: applied, never answered
  auto sent = co_await send(wire::build_op_msg(0, requestId, 0, reply.view()), c);
  co_return sent.has_value();
}

asio::awaitable<bool> Session::exhaust_get_more(const wire::Message& m, const CommandInput& in,
                                                Doc first, std::optional<wire::Compressor> c) {
  std::int32_t responseTo = m.header.requestId;
  Doc reply = std::move(first);
  for (;;) {
    bool more = reply_ok(reply) && reply_cursor_id(reply) != 0;
    std::uint32_t flags = more ? wire::kMoreToCome : 0;
    auto sent = co_await send(wire::build_op_msg(0, responseTo, flags, reply.view()), c);
    if (!sent) co_return false;
    if (!more) co_return true;
    ++state_.counters.exhaustGetMoreOut;
    responseTo = *sent;
    reply = run_command(ctx_, in).reply;  // the same getMore, next batch
  }
}

asio::awaitable<bool> Session::stream_hello(const wire::Message& m, const CommandInput& in,
                                            bool exhaust) {
  AwaitSpec spec = await_spec(in.body);
  std::int32_t responseTo = m.header.requestId;
  std::int64_t known = spec.counter;
  Topology::MemberState st = state_.topology.state(info_.member);
  // A client with another process's topologyVersion, or an older counter,
  // gets an answer at once; otherwise the reply waits for a change or maxAwaitTimeMS.
  bool stale = bson_oid_compare(&spec.processId, &st.processId) != 0 || known < st.counter;
  for (;;) {
    if (!stale) {
      auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(spec.maxAwaitTimeMS);
      if (co_await await_topology(known, deadline) == Wake::readable) {
        // The client closed (or broke the exhaust protocol by sending): stop.
        co_return true;
      }
    }
    stale = false;
    Doc reply = hello_reply(ctx_, in);
    known = state_.topology.counter(info_.member);
    std::uint32_t flags = exhaust ? wire::kMoreToCome : 0;
    ++state_.counters.awaitedHelloOut;
    auto sent = co_await send(wire::build_op_msg(0, responseTo, flags, reply.view()), std::nullopt);
    if (!sent) co_return false;
    if (!exhaust) co_return true;
    responseTo = *sent;
  }
}

asio::awaitable<Session::Wake> Session::await_topology(
    std::int64_t counter, std::chrono::steady_clock::time_point deadline) {
  // A wake-up without a change (a hang lifted elsewhere) waits again.
  for (;;) {
    auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
    timer->expires_at(deadline);
    state_.topology.park(timer);
    if (state_.topology.counter(info_.member) != counter) co_return Wake::topology;
    auto result = co_await (timer->async_wait(nothrow) ||
                            socket_.async_wait(tcp::socket::wait_read, nothrow));
    if (result.index() == 1) co_return Wake::readable;
    if (state_.topology.counter(info_.member) != counter) co_return Wake::topology;
    if (std::chrono::steady_clock::now() >= deadline) co_return Wake::timeout;
  }
}

asio::awaitable<void> Session::wait_while_hung() {
  while (state_.topology.hung(info_.member)) {
    // Parked like a streaming hello: un-hanging (or stopping) the member wakes it.
    auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
    timer->expires_after(std::chrono::hours(24));
    state_.topology.park(timer);
    if (!state_.topology.hung(info_.member)) break;
    co_await timer->async_wait(nothrow);
  }
}

asio::awaitable<bool> Session::handle_op_query(const wire::Message& m) {
  const auto& q = std::get<wire::OpQuery>(m.body);
  if (!q.isCommand()) co_return co_await handle_legacy_find(m);
  auto view = wire::command_view(m);
  CommandInput in;
  in.opQuery = true;
  Doc reply;
  if (view) {
    in.name = std::string(view->name);
    in.db = std::string(view->database);
    in.body = view->body;
  }
  if (!view || in.name.empty()) {
    reply = error_reply(CommandError::failed_to_parse("empty command"));
  } else {
    CommandResult r = run_command(ctx_, in);
    if (r.delay.count() > 0) co_await sleep_for(r.delay);
    reply = std::move(r.reply);
  }
  std::optional<wire::Compressor> c = m.compressor;
  if (c && never_compressed(in.name)) c.reset();
  std::array<BsonView, 1> docs = {reply.view()};
  auto sent = co_await send(wire::build_op_reply(0, m.header.requestId, 0, 0, 0, docs), c);
  co_return sent.has_value();
}

asio::awaitable<bool> Session::handle_legacy_find(const wire::Message& m) {
  // A 4.x-era query: OP_QUERY on "db.coll", the filter either bare or
  // wrapped as {$query: filter, $orderby: sort, $readPreference: ...}.
  const auto& q = std::get<wire::OpQuery>(m.body);
  std::optional<wire::Compressor> c = m.compressor;
  FindSpec spec = legacy_query_spec(q.query);
  if (q.returnFieldsSelector) spec.projection = *q.returnFieldsSelector;
  spec.skip = std::max(0, q.numberToSkip);
  // numberToReturn: 0 = default batch; negative or 1 = one batch of that many
  // and close; otherwise the batch size (the driver enforces any limit).
  std::int64_t ntoreturn = q.numberToReturn;
  bool single = ntoreturn < 0 || ntoreturn == 1;
  std::int64_t batch = ntoreturn == 0 ? 101 : std::abs(ntoreturn);
  if (single) spec.limit = batch;

  if (state_.topology.replica_set() && !state_.topology.is_primary(info_.member) &&
      (q.flags & wire::kQuerySecondaryOk) == 0) {
    CommandError e{13435, "NotPrimaryNoSecondaryOk", "not master and slaveOk=false"};
    co_return (co_await send(query_failure(m.header.requestId, e), c)).has_value();
  }
  auto found = state_.store.find(std::string(q.database()), std::string(q.collection()), spec);
  if (auto* e = std::get_if<CommandError>(&found)) {
    co_return (co_await send(query_failure(m.header.requestId, *e), c)).has_value();
  }
  Batch b = state_.cursors.open(std::string(q.fullCollectionName), std::move(std::get<0>(found)),
                                batch, single);
  std::int32_t responseTo = m.header.requestId;
  for (;;) {
    auto sent = co_await send(
        op_reply(responseTo, b.docs, b.cursorId, b.startingFrom, wire::kReplyAwaitCapable), c);
    if (!sent) co_return false;
    if (!q.exhaust() || b.cursorId == 0) co_return true;
    // Exhaust: the next batch follows unasked, answering our previous reply.
    ++state_.counters.exhaustOpReplyOut;
    responseTo = *sent;
    auto next = state_.cursors.next(b.cursorId, ntoreturn == 0 ? -1 : batch);
    if (!next) co_return true;
    b = std::move(*next);
  }
}

asio::awaitable<bool> Session::handle_op_get_more(const wire::Message& m) {
  const auto& g = std::get<wire::OpGetMore>(m.body);
  auto b = state_.cursors.next(g.cursorId, g.numberToReturn <= 0 ? -1 : g.numberToReturn);
  wire::Frame reply = b ? op_reply(m.header.requestId, b->docs, b->cursorId, b->startingFrom)
                        : op_reply(m.header.requestId, {}, 0, 0, wire::kReplyCursorNotFound);
  co_return (co_await send(std::move(reply), m.compressor)).has_value();
}

asio::awaitable<std::optional<std::int32_t>> Session::send(wire::Frame frame,
                                                           std::optional<wire::Compressor> c) {
  // A hung member reads requests but answers nothing until it is un-hung.
  co_await wait_while_hung();
  if (auto delay = faults().delayMs; delay > 0)
    co_await sleep_for(std::chrono::milliseconds(delay));
  // Stamp our requestID (builders were given 0) before any compression.
  std::int32_t id = next_request_id();
  for (int i = 0; i < 4; ++i)
    frame[4 + i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(id) >> (8 * i));
  if (c) {
    auto packed = wire::build_op_compressed(frame, *c);
    if (packed) {
      frame = std::move(*packed);
      ++state_.counters.compressedOut[static_cast<std::size_t>(*c)];
    }
  }
  auto [ec, n] = tls_ ? co_await asio::async_write(*tls_, asio::buffer(frame), nothrow)
                      : co_await asio::async_write(socket_, asio::buffer(frame), nothrow);
  if (ec) co_return std::nullopt;
  co_return id;
}

asio::awaitable<void> Session::sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(nothrow);
}

}  // namespace varanus::stub
