// varanus::wire — OP_COMPRESSED payload codecs (snappy, zlib, zstd, noop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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

/// Decompresses `input` as a stream, handing the output to `sink` in
/// chunks (at most 64 KiB each) as it is produced; `sink` returns false to
/// stop there. Returns the bytes decompressed: all `expectedSize` of them
/// (checked as decompress() checks them), or, zlib and zstd, fewer when
/// `sink` stopped it.
/// zlib and zstd stop early, having done only the work the output so far
/// cost; snappy's API has no stream to stop, so snappy (and noop) input is
/// decompressed whole first (the caller bounds it: the tracker's
/// decompression bomb guard and budget).
Result<std::size_t> decompress_stream(
    Compressor c, std::span<const std::uint8_t> input, std::size_t expectedSize,
    std::size_t maxSize, const std::function<bool(std::span<const std::uint8_t>)>& sink);

}  // namespace varanus::wire
