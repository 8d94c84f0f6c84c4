// Following one connection's hello replies (see the header).
#include "varanus/wire/hello_stream.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "bytes.hpp"

namespace varanus::wire {

namespace {

constexpr std::int32_t kOpReply = 1;
constexpr std::int32_t kOpQuery = 2004;
constexpr std::int32_t kOpCompressed = 2012;
constexpr std::int32_t kOpMsg = 2013;
constexpr std::size_t kHeader = 16;
/// How much of a request is read to find its command name: the OP_QUERY
/// namespace may take up to 120 bytes, then a $query wrapper.
constexpr std::size_t kPeek = 320;
/// hello requests awaiting their reply, at most (a driver has one).
constexpr std::size_t kMaxAwaiting = 64;

std::int32_t le32(const std::uint8_t* p) {
  return detail::load_i32(p);
}

/// The NUL-terminated string at `at` within [at, end), or nullopt.
std::optional<std::string_view> cstring(const std::uint8_t* at, const std::uint8_t* end) {
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(at, 0, end - at));
  if (!nul) return std::nullopt;
  return std::string_view(reinterpret_cast<const char*>(at), nul - at);
}

/// The first key of the BSON document at `doc` and, when it is an embedded
/// document, where that starts.
struct FirstKey {
  std::string_view key;
  std::uint8_t type = 0;
  const std::uint8_t* value = nullptr;
};
std::optional<FirstKey> first_key(const std::uint8_t* doc, const std::uint8_t* end) {
  if (end - doc < 6) return std::nullopt;
  FirstKey k;
  k.type = doc[4];
  auto key = cstring(doc + 5, end);
  if (!key) return std::nullopt;
  k.key = *key;
  k.value = doc + 5 + key->size() + 1;
  return k;
}

bool is_hello_name(std::string_view k) {
  return k == "hello" || k == "isMaster" || k == "ismaster";
}

}  // namespace

void HelloReplyStream::stop(std::string why) {
  passthrough_ = true;
  why_ = std::move(why);
  helloIds_.clear();
}

void HelloReplyStream::remember(std::int32_t requestId) {
  if (helloIds_.size() >= kMaxAwaiting) helloIds_.erase(helloIds_.begin());
  helloIds_.push_back(requestId);
}

bool HelloReplyStream::answers_hello(std::int32_t responseTo) {
  auto it = std::find(helloIds_.begin(), helloIds_.end(), responseTo);
  if (it == helloIds_.end()) return false;
  helloIds_.erase(it);
  return true;
}

void HelloReplyStream::classify_request() {
  const std::uint8_t* p = peek_.data();
  const std::uint8_t* end = p + peek_.size();
  const std::int32_t requestId = le32(p + 4);
  const std::int32_t opCode = le32(p + 12);
  std::optional<FirstKey> k;
  if (opCode == kOpMsg) {
    // flagBits, then the first section: kind 0 (the body) comes first in
    // every request drivers send.
    if (peek_.size() < 21 || p[20] != 0) return;
    k = first_key(p + 21, end);
  } else if (opCode == kOpQuery) {
    auto ns = cstring(p + 20, end);
    if (!ns || ns->size() < 5 || ns->substr(ns->size() - 5) != ".$cmd") return;
    const std::uint8_t* doc = p + 20 + ns->size() + 1 + 8;  // numberToSkip, numberToReturn
    if (doc >= end) return;
    k = first_key(doc, end);
    // {$query: {isMaster: 1}, $readPreference: ...}
    if (k && (k->key == "$query" || k->key == "query") && k->type == 0x03)
      k = first_key(k->value, end);
  }
  if (k && is_hello_name(k->key)) remember(requestId);
}

void HelloReplyStream::client_bytes(std::span<const std::uint8_t> bytes) {
  std::size_t i = 0;
  while (i < bytes.size() && !passthrough_) {
    if (clientSkip_ > 0) {
      const std::size_t n = std::min(clientSkip_, bytes.size() - i);
      clientSkip_ -= n;
      i += n;
      continue;
    }
    // At (or within the first bytes of) a request: gather what is peeked at.
    const std::size_t want = peekWanted_ == 0 ? 4 : peekWanted_;
    const std::size_t n = std::min(want - peek_.size(), bytes.size() - i);
    peek_.insert(peek_.end(), bytes.begin() + static_cast<std::ptrdiff_t>(i),
                 bytes.begin() + static_cast<std::ptrdiff_t>(i + n));
    i += n;
    if (peek_.size() < want) break;  // the rest comes with the next bytes
    if (peekWanted_ == 0) {
      const std::int32_t length = le32(peek_.data());
      if (length < static_cast<std::int32_t>(kHeader) || length > maxMessageSize_) {
        stop("a client message's length is " + std::to_string(length));
        return;
      }
      peekWanted_ = std::min<std::size_t>(static_cast<std::size_t>(length), kPeek);
      continue;
    }
    classify_request();
    clientSkip_ = static_cast<std::size_t>(le32(peek_.data())) - peek_.size();
    peek_.clear();
    peekWanted_ = 0;
  }
}

HelloReplyStream::Output HelloReplyStream::server_bytes(std::span<const std::uint8_t> in,
                                                        const Addresses& addresses) {
  Output out;
  // What is forwarded is the input's prefix [0, keptTo) for as long as
  // nothing differs; at the first difference the output becomes a copy.
  std::size_t keptTo = 0;
  bool copying = false;
  auto deviate = [&] {
    if (copying) return;
    copying = true;
    out.unchanged = false;
    out.bytes.assign(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(keptTo));
  };
  auto keep = [&](std::size_t from, std::size_t to) {
    if (!copying && from == keptTo) {
      keptTo = to;
      return;
    }
    deviate();
    out.bytes.insert(out.bytes.end(), in.begin() + static_cast<std::ptrdiff_t>(from),
                     in.begin() + static_cast<std::ptrdiff_t>(to));
  };
  auto emit = [&](std::span<const std::uint8_t> bytes) {
    deviate();
    out.bytes.insert(out.bytes.end(), bytes.begin(), bytes.end());
  };
  auto finish_frame = [&] {
    // A whole hello reply: rewritten with the current map, or with the
    // listeners its unknown members get first.
    auto r = rewrite_hello(frame_, addresses({}), maxMessageSize_);
    if (r.ok() && !r->unknown.empty())
      r = rewrite_hello(frame_, addresses(r->unknown), maxMessageSize_);
    if (frame_.size() >= 20 && le32(frame_.data() + 12) == kOpMsg &&
        (static_cast<std::uint32_t>(le32(frame_.data() + 16)) & wire::kMoreToCome) != 0) {
      remember(le32(frame_.data() + 4));  // a streamed hello: the next reply answers this one
    }
    if (r.ok() && r->frame) {
      emit(*r->frame);
      ++out.rewritten;
    } else {
      emit(frame_);
    }
    frame_.clear();
    frameLength_ = 0;
  };
  // A reply's header is whole: hold the reply or let it pass.
  auto begin_frame = [&](const std::uint8_t* h) -> bool {
    const std::int32_t length = le32(h);
    if (length < static_cast<std::int32_t>(kHeader) || length > maxMessageSize_) {
      stop("an upstream message's length is " + std::to_string(length));
      return false;
    }
    const std::int32_t opCode = le32(h + 12);
    const bool reply = opCode == kOpMsg || opCode == kOpReply || opCode == kOpCompressed;
    if (reply && !helloIds_.empty() && answers_hello(le32(h + 8))) {
      frameLength_ = static_cast<std::size_t>(length);
      return true;
    }
    serverSkip_ = static_cast<std::size_t>(length);
    return true;
  };

  std::size_t i = 0;
  while (i < in.size()) {
    if (passthrough_) {
      keep(i, in.size());
      i = in.size();
      break;
    }
    if (serverSkip_ > 0) {
      const std::size_t n = std::min(serverSkip_, in.size() - i);
      keep(i, i + n);
      serverSkip_ -= n;
      i += n;
      continue;
    }
    if (frameLength_ > 0) {
      const std::size_t n = std::min(frameLength_ - frame_.size(), in.size() - i);
      if (frame_.empty()) deviate();  // held back from here on
      frame_.insert(frame_.end(), in.begin() + static_cast<std::ptrdiff_t>(i),
                    in.begin() + static_cast<std::ptrdiff_t>(i + n));
      i += n;
      if (frame_.size() == frameLength_) finish_frame();
      continue;
    }
    if (header_.empty() && in.size() - i >= kHeader) {
      if (!begin_frame(in.data() + i)) continue;  // stopped: the rest passes
      continue;                                   // skip or hold from i on
    }
    // A header split across reads: held back until whole.
    deviate();
    const std::size_t n = std::min(kHeader - header_.size(), in.size() - i);
    header_.insert(header_.end(), in.begin() + static_cast<std::ptrdiff_t>(i),
                   in.begin() + static_cast<std::ptrdiff_t>(i + n));
    i += n;
    if (header_.size() < kHeader) break;
    std::vector<std::uint8_t> h = std::move(header_);
    header_.clear();
    if (!begin_frame(h.data())) {
      emit(h);
      continue;
    }
    if (frameLength_ > 0) {
      frame_ = std::move(h);
      if (frame_.size() == frameLength_) finish_frame();
    } else {
      emit(h);
      serverSkip_ -= kHeader;
    }
  }
  if (!copying && keptTo != in.size()) deviate();
  return out;
}

std::vector<std::uint8_t> HelloReplyStream::take_held() {
  std::vector<std::uint8_t> held = std::move(header_);
  held.insert(held.end(), frame_.begin(), frame_.end());
  header_.clear();
  frame_.clear();
  frameLength_ = 0;
  return held;
}

}  // namespace varanus::wire
