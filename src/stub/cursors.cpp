#include "cursors.hpp"

namespace varanus::stub {
namespace {
constexpr std::size_t kMaxBatchBytes = 16 * 1024 * 1024;
}

Batch Cursors::cut(Cursor& c, std::int64_t batchSize) {
  Batch b;
  b.startingFrom = static_cast<std::int32_t>(c.pos);
  std::size_t bytes = 0;
  while (c.pos < c.docs.size()) {
    if (batchSize >= 0 && b.docs.size() >= static_cast<std::size_t>(batchSize)) break;
    std::size_t size = c.docs[c.pos].size();
    if (!b.docs.empty() && bytes + size > kMaxBatchBytes) break;
    bytes += size;
    b.docs.push_back(std::move(c.docs[c.pos++]));
  }
  return b;
}

Batch Cursors::open(std::string ns, std::vector<BsonBytes> docs, std::int64_t batchSize,
                    bool singleBatch) {
  Cursor c{std::move(ns), std::move(docs), 0};
  Batch b = cut(c, batchSize);
  if (singleBatch || c.pos >= c.docs.size()) return b;
  std::lock_guard lock(mu_);
  std::int64_t id = 0;
  do {
    id = static_cast<std::int64_t>(rng_() >> 1);
  } while (id == 0 || cursors_.contains(id));
  cursors_.emplace(id, std::move(c));
  b.cursorId = id;
  return b;
}

std::optional<Batch> Cursors::next(std::int64_t id, std::int64_t batchSize, std::string* ns) {
  std::lock_guard lock(mu_);
  auto it = cursors_.find(id);
  if (it == cursors_.end()) return std::nullopt;
  if (ns != nullptr) *ns = it->second.ns;
  Batch b = cut(it->second, batchSize);
  if (it->second.pos >= it->second.docs.size()) {
    cursors_.erase(it);
  } else {
    b.cursorId = id;
  }
  return b;
}

bool Cursors::kill(std::int64_t id) {
  std::lock_guard lock(mu_);
  return cursors_.erase(id) > 0;
}

std::size_t Cursors::open_count() const {
  std::lock_guard lock(mu_);
  return cursors_.size();
}

}  // namespace varanus::stub
