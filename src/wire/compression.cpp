// OP_COMPRESSED payload codecs. decompress() never allocates more than the
// caller's bound and never trusts the compressor's own length claims.
#include "varanus/wire/compression.hpp"

#include <snappy.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <climits>
#include <cstring>
#include <string>

#include "bytes.hpp"

namespace varanus::wire {

using detail::make_error;

Result<std::vector<std::uint8_t>> compress(Compressor c, std::span<const std::uint8_t> input,
                                           int level) {
  std::vector<std::uint8_t> out;
  switch (c) {
    case Compressor::noop:
      out.assign(input.begin(), input.end());
      return out;
    case Compressor::snappy: {
      out.resize(snappy::MaxCompressedLength(input.size()));
      std::size_t n = 0;
      snappy::RawCompress(reinterpret_cast<const char*>(input.data()), input.size(),
                          reinterpret_cast<char*>(out.data()), &n);
      out.resize(n);
      return out;
    }
    case Compressor::zlib: {
      if (input.size() > UINT_MAX) return make_error(Errc::invalid_field, 0, "input too large");
      uLongf n = compressBound(static_cast<uLong>(input.size()));
      out.resize(n);
      const int rc = compress2(out.data(), &n, input.data(), static_cast<uLong>(input.size()),
                               level < 0 ? Z_DEFAULT_COMPRESSION : level);
      if (rc != Z_OK) {
        return make_error(Errc::decompression_failed, 0,
                          "zlib compress2 failed: " + std::to_string(rc));
      }
      out.resize(n);
      return out;
    }
    case Compressor::zstd: {
      out.resize(ZSTD_compressBound(input.size()));
      const std::size_t n = ZSTD_compress(out.data(), out.size(), input.data(), input.size(),
                                          level < 0 ? ZSTD_CLEVEL_DEFAULT : level);
      if (ZSTD_isError(n)) {
        return make_error(Errc::decompression_failed, 0,
                          std::string("zstd compress failed: ") + ZSTD_getErrorName(n));
      }
      out.resize(n);
      return out;
    }
  }
  return make_error(Errc::unknown_compressor, 0,
                    "compressorId " + std::to_string(static_cast<int>(c)));
}

Result<std::vector<std::uint8_t>> decompress(Compressor c, std::span<const std::uint8_t> input,
                                             std::size_t expectedSize, std::size_t maxSize) {
  if (expectedSize > maxSize) {
    return make_error(Errc::uncompressed_size_too_large, 0,
                      "uncompressedSize " + std::to_string(expectedSize) + " > maximum " +
                          std::to_string(maxSize));
  }
  auto mismatch = [&](std::size_t got) {
    return make_error(Errc::decompressed_size_mismatch, 0,
                      std::string(to_string(c)) + " yields " + std::to_string(got) +
                          " bytes, uncompressedSize says " + std::to_string(expectedSize));
  };
  std::vector<std::uint8_t> out;
  switch (c) {
    case Compressor::noop:
      if (input.size() != expectedSize) return mismatch(input.size());
      out.assign(input.begin(), input.end());
      return out;
    case Compressor::snappy: {
      const char* in = reinterpret_cast<const char*>(input.data());
      std::size_t n = 0;
      // The snappy header states the length; check it against the claim first.
      if (!snappy::GetUncompressedLength(in, input.size(), &n)) {
        return make_error(Errc::decompression_failed, 0, "snappy: bad length header");
      }
      if (n != expectedSize) return mismatch(n);
      out.resize(expectedSize);
      if (!snappy::RawUncompress(in, input.size(), reinterpret_cast<char*>(out.data()))) {
        return make_error(Errc::decompression_failed, 0, "snappy: corrupt input");
      }
      return out;
    }
    case Compressor::zlib: {
      if (input.size() > UINT_MAX || expectedSize > UINT_MAX) {
        return make_error(Errc::decompression_failed, 0, "zlib: input too large");
      }
      out.resize(expectedSize);
      std::uint8_t none = 0;  // zlib refuses a null next_out, even for 0 bytes
      z_stream zs{};
      if (inflateInit(&zs) != Z_OK) {
        return make_error(Errc::decompression_failed, 0, "zlib: inflateInit failed");
      }
      zs.next_in = const_cast<Bytef*>(input.data());
      zs.avail_in = static_cast<uInt>(input.size());
      zs.next_out = out.empty() ? &none : out.data();
      zs.avail_out = static_cast<uInt>(out.size());
      int rc = inflate(&zs, Z_FINISH);
      std::size_t produced = out.size() - zs.avail_out;
      if (rc == Z_BUF_ERROR && zs.avail_out == 0) {
        // Output full but the stream goes on: more data than claimed.
        std::uint8_t extra = 0;
        zs.next_out = &extra;
        zs.avail_out = 1;
        rc = inflate(&zs, Z_FINISH);
        const bool more = zs.avail_out == 0;
        inflateEnd(&zs);
        if (more) return mismatch(produced + 1);  // at least one byte too many
        if (rc != Z_STREAM_END)
          return make_error(Errc::decompression_failed, 0, "zlib: corrupt input");
        return out;
      }
      inflateEnd(&zs);
      if (rc == Z_STREAM_END) {
        if (produced != expectedSize) return mismatch(produced);
        return out;
      }
      if (rc == Z_BUF_ERROR) {
        // Input ran out before the stream ended.
        return make_error(Errc::decompression_failed, 0,
                          "zlib: truncated stream after " + std::to_string(produced) + " bytes");
      }
      return make_error(Errc::decompression_failed, 0,
                        std::string("zlib: ") + (zs.msg ? zs.msg : "inflate failed"));
    }
    case Compressor::zstd: {
      // Frames may state their size; an honest frame lets us refuse early.
      const unsigned long long stated = ZSTD_getFrameContentSize(input.data(), input.size());
      if (stated == ZSTD_CONTENTSIZE_ERROR) {
        return make_error(Errc::decompression_failed, 0, "zstd: not a zstd frame");
      }
      if (stated != ZSTD_CONTENTSIZE_UNKNOWN && stated != expectedSize) {
        return mismatch(static_cast<std::size_t>(stated));
      }
      // One spare byte reveals output longer than claimed.
      out.resize(expectedSize + 1);
      const std::size_t n = ZSTD_decompress(out.data(), out.size(), input.data(), input.size());
      if (ZSTD_isError(n)) {
        if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) return mismatch(out.size());
        return make_error(Errc::decompression_failed, 0,
                          std::string("zstd: ") + ZSTD_getErrorName(n));
      }
      if (n != expectedSize) return mismatch(n);
      out.resize(expectedSize);
      return out;
    }
  }
  return make_error(Errc::unknown_compressor, 0,
                    "compressorId " + std::to_string(static_cast<int>(c)));
}

Result<std::size_t> decompress_stream(
    Compressor c, std::span<const std::uint8_t> input, std::size_t expectedSize,
    std::size_t maxSize, const std::function<bool(std::span<const std::uint8_t>)>& sink) {
  constexpr std::size_t kChunk = 64 * 1024;
  if (expectedSize > maxSize) {
    return make_error(Errc::uncompressed_size_too_large, 0,
                      "uncompressedSize " + std::to_string(expectedSize) + " > maximum " +
                          std::to_string(maxSize));
  }
  auto mismatch = [&](std::size_t got) {
    return make_error(Errc::decompressed_size_mismatch, 0,
                      std::string(to_string(c)) + " yields " + std::to_string(got) +
                          " bytes, uncompressedSize says " + std::to_string(expectedSize));
  };
  // Hands `out` to the sink in chunks: false once the sink stopped.
  auto hand = [&](std::span<const std::uint8_t> out) {
    for (std::size_t at = 0; at < out.size(); at += kChunk)
      if (!sink(out.subspan(at, std::min(kChunk, out.size() - at)))) return false;
    return true;
  };
  switch (c) {
    case Compressor::noop:
    case Compressor::snappy: {
      auto whole = decompress(c, input, expectedSize, maxSize);
      if (!whole) return whole.error();
      hand(*whole);
      return whole->size();  // all of it was decompressed, wherever the sink stopped
    }
    case Compressor::zlib: {
      if (input.size() > UINT_MAX)
        return make_error(Errc::decompression_failed, 0, "zlib: input too large");
      std::vector<std::uint8_t> out(kChunk);
      z_stream zs{};
      if (inflateInit(&zs) != Z_OK)
        return make_error(Errc::decompression_failed, 0, "zlib: inflateInit failed");
      zs.next_in = const_cast<Bytef*>(input.data());
      zs.avail_in = static_cast<uInt>(input.size());
      std::size_t produced = 0;
      for (;;) {
        zs.next_out = out.data();
        zs.avail_out = static_cast<uInt>(out.size());
        const int rc = inflate(&zs, Z_NO_FLUSH);
        const std::size_t n = out.size() - zs.avail_out;
        if (rc != Z_OK && rc != Z_STREAM_END && !(rc == Z_BUF_ERROR && n == 0)) {
          std::string why = std::string("zlib: ") + (zs.msg ? zs.msg : "inflate failed");
          inflateEnd(&zs);
          return make_error(Errc::decompression_failed, 0, std::move(why));
        }
        if (produced + n > expectedSize) {
          inflateEnd(&zs);
          return mismatch(produced + n);  // at least that many
        }
        produced += n;
        if (n != 0 && !hand({out.data(), n})) {
          inflateEnd(&zs);
          return produced;  // stopped early: the rest is never inflated
        }
        if (rc == Z_STREAM_END) break;
        if (n == 0) {  // no progress: the input ran out before the stream ended
          inflateEnd(&zs);
          return make_error(Errc::decompression_failed, 0,
                            "zlib: truncated stream after " + std::to_string(produced) + " bytes");
        }
      }
      inflateEnd(&zs);
      if (produced != expectedSize) return mismatch(produced);
      return produced;
    }
    case Compressor::zstd: {
      const unsigned long long stated = ZSTD_getFrameContentSize(input.data(), input.size());
      if (stated == ZSTD_CONTENTSIZE_ERROR)
        return make_error(Errc::decompression_failed, 0, "zstd: not a zstd frame");
      if (stated != ZSTD_CONTENTSIZE_UNKNOWN && stated != expectedSize)
        return mismatch(static_cast<std::size_t>(stated));
      ZSTD_DCtx* dctx = ZSTD_createDCtx();
      if (dctx == nullptr) return make_error(Errc::decompression_failed, 0, "zstd: out of memory");
      std::vector<std::uint8_t> out(kChunk);
      ZSTD_inBuffer in{input.data(), input.size(), 0};
      std::size_t produced = 0;
      std::size_t rc = 1;
      for (;;) {
        ZSTD_outBuffer o{out.data(), out.size(), 0};
        rc = ZSTD_decompressStream(dctx, &o, &in);
        if (ZSTD_isError(rc)) {
          std::string why = std::string("zstd: ") + ZSTD_getErrorName(rc);
          ZSTD_freeDCtx(dctx);
          return make_error(Errc::decompression_failed, 0, std::move(why));
        }
        if (produced + o.pos > expectedSize) {
          ZSTD_freeDCtx(dctx);
          return mismatch(produced + o.pos);
        }
        produced += o.pos;
        if (o.pos != 0 && !hand({out.data(), o.pos})) {
          ZSTD_freeDCtx(dctx);
          return produced;
        }
        if (rc == 0) break;  // the frame is complete
        if (o.pos == 0 && in.pos == in.size) {
          ZSTD_freeDCtx(dctx);
          return make_error(Errc::decompression_failed, 0,
                            "zstd: truncated frame after " + std::to_string(produced) + " bytes");
        }
      }
      ZSTD_freeDCtx(dctx);
      if (produced != expectedSize) return mismatch(produced);
      return produced;
    }
  }
  return make_error(Errc::unknown_compressor, 0,
                    "compressorId " + std::to_string(static_cast<int>(c)));
}

}  // namespace varanus::wire
