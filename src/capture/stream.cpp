#include "varanus/capture/stream.hpp"

namespace varanus::capture {

void Stream::syn(std::uint32_t isn) noexcept {
  if (started_) return;  // a retransmitted SYN
  started_ = true;
  midstream_ = false;
  nextSeq_ = isn + 1;
  next_ = 1 << 20;  // room below for segments that start before the expected byte
}

void Stream::deliver(std::span<const std::uint8_t> bytes, Output& out) {
  if (bytes.empty()) return;
  next_ += bytes.size();
  nextSeq_ += static_cast<std::uint32_t>(bytes.size());
  counters_.delivered += bytes.size();
  out.data(bytes);
}

void Stream::skip_to(std::uint64_t offset, Output& out) {
  if (offset <= next_) return;
  const std::uint64_t n = offset - next_;
  next_ = offset;
  nextSeq_ += static_cast<std::uint32_t>(n);
  ++counters_.gaps;
  counters_.gapBytes += n;
  out.gap(n);
}

void Stream::drain(Output& out) {
  while (!waiting_.empty()) {
    auto it = waiting_.begin();
    if (it->first > next_) return;
    const std::uint64_t start = it->first;
    std::vector<std::uint8_t> bytes = std::move(it->second);
    waiting_.erase(it);
    bufferedBytes_ -= bytes.size();
    const std::uint64_t end = start + bytes.size();
    if (end <= next_) {
      counters_.duplicate += bytes.size();
      continue;
    }
    const std::size_t from = static_cast<std::size_t>(next_ - start);
    counters_.duplicate += from;
    deliver(std::span<const std::uint8_t>(bytes).subspan(from), out);
  }
}

void Stream::segment(std::uint32_t seq, std::span<const std::uint8_t> payload, Output& out) {
  if (payload.empty()) return;
  if (!started_) {
    started_ = true;
    midstream_ = true;
    nextSeq_ = seq;
    next_ = 1 << 20;
  }
  const std::int64_t start = offset_of(seq);
  const std::int64_t end = start + static_cast<std::int64_t>(payload.size());
  const auto next = static_cast<std::int64_t>(next_);
  if (end <= next) {
    counters_.duplicate += payload.size();
    return;
  }
  if (start <= next) {
    counters_.duplicate += static_cast<std::uint64_t>(next - start);
    deliver(payload.subspan(static_cast<std::size_t>(next - start)), out);
    drain(out);
    return;
  }
  // Out of order: wait for the bytes before it.
  ++counters_.outOfOrder;
  auto [it, inserted] = waiting_.try_emplace(static_cast<std::uint64_t>(start));
  if (!inserted && it->second.size() >= payload.size()) {
    counters_.duplicate += payload.size();
    return;
  }
  bufferedBytes_ += payload.size() - it->second.size();
  if (!inserted) counters_.duplicate += it->second.size();
  it->second.assign(payload.begin(), payload.end());
  // Too much waiting: the bytes before it are not coming.
  while (bufferedBytes_ > maxBuffered_ && !waiting_.empty()) {
    skip_to(waiting_.begin()->first, out);
    drain(out);
  }
}

void Stream::acked(std::uint32_t ack, Output& out) {
  if (!started_) return;
  const std::int32_t ahead = static_cast<std::int32_t>(ack - nextSeq_);
  // Far ahead is not an acknowledgement of this stream (a bogus or reused
  // connection): ignore it.
  if (ahead <= 0 || ahead > (1 << 30)) return;
  // The peer has bytes the capture never saw.
  std::uint64_t target = next_ + static_cast<std::uint64_t>(ahead);
  if (!waiting_.empty() && waiting_.begin()->first < target) target = waiting_.begin()->first;
  skip_to(target, out);
  drain(out);
}

void Stream::flush(Output& out) {
  while (!waiting_.empty()) {
    skip_to(waiting_.begin()->first, out);
    drain(out);
  }
}

}  // namespace varanus::capture
