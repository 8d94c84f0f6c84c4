// varanus-stub — server-side cursors. A query's result is materialised once
// (a snapshot); the first batch is cut from it and the rest waits here under
// a random positive 64-bit id for getMore / OP_GET_MORE, shared by every
// connection (a driver may kill a cursor from another connection).
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "doc.hpp"

namespace varanus::stub {

/// Documents in one reply: at most `batchSize` (negative = no count limit)
/// and, as mongod, no more than ~16 MiB of them (at least one when any).
struct Batch {
  std::vector<BsonBytes> docs;
  std::int64_t cursorId = 0;      ///< 0 when the cursor is exhausted/closed
  std::int32_t startingFrom = 0;  ///< position of the first document in the result (OP_REPLY)
};

class Cursors {
 public:
  /// Cuts the first batch from `docs`; opens a cursor for the rest unless
  /// singleBatch or nothing is left.
  Batch open(std::string ns, std::vector<BsonBytes> docs, std::int64_t batchSize, bool singleBatch);

  /// The next batch of cursor `id`; nullopt when no such cursor. The cursor
  /// is closed (and the id in the Batch is 0) when this batch drains it.
  std::optional<Batch> next(std::int64_t id, std::int64_t batchSize, std::string* ns = nullptr);

  /// False when the cursor did not exist.
  bool kill(std::int64_t id);

  std::size_t open_count() const;

 private:
  struct Cursor {
    std::string ns;
    std::vector<BsonBytes> docs;
    std::size_t pos = 0;
  };
  static Batch cut(Cursor& c, std::int64_t batchSize);

  mutable std::mutex mu_;
  std::unordered_map<std::int64_t, Cursor> cursors_;
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace varanus::stub
