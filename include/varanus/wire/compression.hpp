// varanus::wire — OP_COMPRESSED payload codecs (snappy, zlib, zstd, noop).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "varanus/wire/message.hpp"

namespace varanus::wire {

/// Compresses `input` with `c`. level: zlib 0-9 / zstd 1-22, -1 = library default.
Result<std::vector<std::uint8_t>> compress(Compressor c, std::span<const std::uint8_t> input,
                                           int level = -1);

/// Decompresses exactly `expectedSize` bytes. Rejects (before allocating)
/// expectedSize above `maxSize`, and any output of another length.
Result<std::vector<std::uint8_t>> decompress(Compressor c, std::span<const std::uint8_t> input,
                                             std::size_t expectedSize, std::size_t maxSize);

}  // namespace varanus::wire
