// varanus::wire — sparse framing: a large OP_MSG frame reduced while it
// streams past, so that inspecting it never buffers it whole.
//
// An event shows at most a bounded rendering of a command or reply
// (bounded.hpp), and the tracker reads a handful of small fields (ok,
// cursor.id, errmsg, $db, ...). Buffering a 1 MB getMore reply or a 48 MB
// insert only to read those costs a copy of every byte and the memory of
// the whole message. SparseMsg takes the frame's bytes in any chunking and
// builds a smaller, valid OP_MSG frame as they pass:
//
//  - the first `budget` bytes of sections, in document order, are kept as
//    they are (what any bounded rendering shows lies far inside them);
//  - the element that crosses the budget is descended into when it is a
//    document or array, cut short when it is a string or binary, kept when
//    small, else left out;
//  - after that, in documents, every element up to `small` bytes is still
//    kept (the `id`, `ns` and `ok` after a reply's batch, `$db` and `lsid`
//    after a command's documents), large documents and arrays are descended
//    into the same way and large scalars are left out; in arrays and
//    document sequences the remaining elements are left out (their keys
//    stay 0, 1, 2, ...);
//  - lengths (document, section, messageLength) are rewritten; a checksum
//    is kept as it was (decode it with verifyChecksum off); kind-2 sections
//    are left out.
//
// Bytes that are left out are never copied. The reduced frame is at most
// budget + a bounded amount larger (`cap`); a frame whose small fields
// after the budget would exceed that, or whose structure is broken, fails
// with a message saying why (the relay is not affected: only inspection).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "varanus/wire/message.hpp"

namespace varanus::wire {

class SparseMsg {
 public:
  /// `budget`: bytes kept in document order; `small`: the largest element
  /// kept after the budget; `cap`: the most the reduced frame may hold
  /// (0 = budget + 1 MiB).
  explicit SparseMsg(std::size_t budget, std::size_t small = 16 * 1024, std::size_t cap = 0);

  /// The frame's next bytes, starting with its first. Never more than the
  /// frame's messageLength in all (the caller frames). Ignored once failed.
  void feed(std::span<const std::uint8_t> bytes);

  /// All messageLength bytes were fed (and nothing failed).
  bool done() const noexcept { return mode_ == Mode::done; }
  bool failed() const noexcept { return mode_ == Mode::failed; }
  const std::string& error() const noexcept { return error_; }
  /// The reduced frame, once done().
  std::span<const std::uint8_t> frame() const noexcept { return out_; }
  /// Bytes of the original frame fed so far.
  std::uint64_t position() const noexcept { return pos_; }
  /// Something of the original was left out or cut.
  bool reduced() const noexcept { return reduced_; }
  /// When all the frame still holds would be left out (a skip that runs,
  /// past container ends only, to the end of the frame; no checksum):
  /// finishes the frame without those bytes and returns true (done()).
  /// Else false, and nothing changes. A caller that produces the bytes at
  /// a cost (decompression) stops there.
  bool finish_skipped();

 private:
  enum class Mode { parse, done, failed };
  enum class Level : std::uint8_t { frame, document, array, sequence };
  struct Open {
    Level level;
    std::size_t lenAt;  // out_ offset of the length to rewrite
    std::uint64_t end;  // frame offset just past the container
  };
  enum class Then : std::uint8_t { nothing, finish_string, finish_binary, finish_frame };

  // Parses what starts at pos_ from `p[0, n)`: how many of those bytes it
  // consumed, or -1 when it needs more of them.
  std::ptrdiff_t step(const std::uint8_t* p, std::size_t n);
  std::ptrdiff_t step_frame(const std::uint8_t* p, std::size_t n);
  std::ptrdiff_t step_sequence(const std::uint8_t* p, std::size_t n);
  std::ptrdiff_t step_document(const std::uint8_t* p, std::size_t n);
  std::ptrdiff_t fail(std::string why);
  void open(Level level, std::uint64_t end);
  void close_top();
  void finish_pending();
  // The decisions for an element of `total` bytes whose first `parsed`
  // bytes are p[0, parsed): each consumes exactly those bytes.
  std::ptrdiff_t keep(const std::uint8_t* p, std::size_t parsed, std::uint64_t total);
  std::ptrdiff_t drop(std::size_t parsed, std::uint64_t total);
  std::ptrdiff_t descend(const std::uint8_t* p, std::size_t header, Level level,
                         std::uint64_t total);

  std::size_t budget_;
  std::size_t small_;
  std::size_t cap_;
  Mode mode_ = Mode::parse;
  std::string error_;
  std::vector<std::uint8_t> out_;
  std::vector<std::uint8_t> carry_;  // a header split across feeds
  std::vector<Open> stack_;
  std::uint64_t pos_ = 0;
  std::uint64_t length_ = 0;  // messageLength, once the header is in
  bool checksum_ = false;
  bool exhausted_ = false;  // the budget was crossed
  bool reduced_ = false;
  // Pending transfer: copy copyLeft_ bytes, skip skipLeft_, then `then_`.
  std::uint64_t copyLeft_ = 0;
  std::uint64_t skipLeft_ = 0;
  Then then_ = Then::nothing;
  std::size_t thenAt_ = 0;
};

/// An OP_COMPRESSED frame whose original message is an OP_MSG, reduced
/// as it is decompressed: the payload inflates as a stream
/// (decompress_stream) into a SparseMsg(budget), so what is kept is the
/// reduced OP_MSG frame (the original header rebuilt: same ids, OP_MSG),
/// never the whole message; and inflating stops as soon as all that is
/// left would be left out (finish_skipped: a large kind-1 sequence at the
/// end of the message, as drivers send bulk writes). zlib and zstd stop
/// there; snappy inflates whole (its API cannot stop).
struct SparseInflated {
  std::vector<std::uint8_t> frame;  ///< the reduced OP_MSG frame
  Compressor compressor = Compressor::noop;
  bool reduced = false;      ///< something was left out or cut
  std::size_t inflated = 0;  ///< bytes decompressed: uncompressedSize, or fewer
};
Result<SparseInflated> inflate_sparse(std::span<const std::uint8_t> frame, std::size_t budget,
                                      std::int32_t maxMessageSize = kDefaultMaxMessageSize);

}  // namespace varanus::wire
