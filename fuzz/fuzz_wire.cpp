// libFuzzer target over the whole pure wire path a proxy runs on untrusted
// bytes: FrameReader (in fuzzer-chosen chunks, with and without a sparse
// budget, so large OP_MSG frames also go through the streaming reducer of
// sparse.hpp) -> decode (with and without
// BSON validation) -> command_view -> merged_command -> append_relaxed_json
// (bounded and unbounded); sniff_protocol on the first bytes. Any crash,
// leak, out-of-bounds read or UB fails.
#include <cstddef>
#include <cstdint>
#include <string>

#include "varanus/wire/command.hpp"
#include "varanus/wire/frame.hpp"
#include "varanus/wire/json.hpp"
#include "varanus/wire/message.hpp"
#include "varanus/wire/sniff.hpp"

namespace w = varanus::wire;

namespace {

// Keeps allocations small whatever the input claims.
constexpr std::int32_t kMax = 1 << 20;

void json_of(w::BsonView d, std::size_t budget) {
  std::string out;
  w::append_relaxed_json(out, d);
  out.clear();
  w::append_relaxed_json(out, d, w::JsonOptions{budget});
}

void exercise(std::span<const std::uint8_t> frame, std::size_t budget) {
  for (bool validate : {true, false}) {
    w::DecodeOptions o;
    o.maxMessageSize = kMax;
    o.validateBson = validate;
    auto m = w::decode(frame, o);
    if (!m) {
      (void)m.error().message();
      continue;
    }
    auto v = w::command_view(*m);
    if (v) {
      const w::BsonBytes merged = w::merged_command(*v);
      // Only validated documents go to the JSON writer: unvalidated views
      // are only promised to have a sound length and terminator; the
      // writer still must not crash on them, so try both.
      json_of({merged.data(), static_cast<std::uint32_t>(merged.size())}, budget);
    }
    std::visit(
        [&](const auto& b) {
          using T = std::decay_t<decltype(b)>;
          if constexpr (std::is_same_v<T, w::OpMsg>) {
            json_of(b.body, budget);
            for (const auto& s : b.sequences)
              for (const auto& d : s.documents) json_of(d, budget);
          } else if constexpr (std::is_same_v<T, w::OpReply>) {
            for (const auto& d : b.documents) json_of(d, budget);
          } else if constexpr (std::is_same_v<T, w::OpQuery>) {
            json_of(b.query, budget);
          }
        },
        m->body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  // First byte: the chunk size for the frame reader and the JSON budget.
  const std::size_t chunk = static_cast<std::size_t>(data[0] % 64) + 1;
  const std::size_t budget = static_cast<std::size_t>(data[0]) * 4;
  const std::span<const std::uint8_t> stream(data + 1, size - 1);

  exercise(stream, budget);  // the input as one frame
  // The listener's first look at a connection, on every prefix length.
  for (std::size_t n = 0; n <= stream.size() && n <= 64; ++n)
    (void)w::sniff_protocol(stream.first(n), kMax);

  // The plain reader, and one whose small sparse budget (64..2104 bytes)
  // reduces any OP_MSG frame above four times it while it streams in.
  w::FrameReader reader(kMax);
  w::FrameReader sparse(kMax, 64 + static_cast<std::size_t>(data[0]) * 8);
  for (std::size_t pos = 0; pos < stream.size(); pos += chunk) {
    const auto piece = stream.subspan(pos, std::min(chunk, stream.size() - pos));
    for (w::FrameReader* r : {&reader, &sparse}) {
      r->feed(piece);
      for (;;) {
        auto n = r->next();
        if (n.status != w::FrameStatus::frame) break;
        exercise(n.frame, budget);
      }
    }
  }
  return 0;
}
