// Writes builder-made seed frames (one per file, prefixed by the fuzz
// target's control byte) for fuzz/corpus. Run once; the outputs are
// committed. usage: varanus-fuzz-seeds DIR
#include <bson/bson.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "varanus/wire/builder.hpp"

namespace w = varanus::wire;

namespace {
bson_t* doc(const char* json) {
  bson_error_t e;
  return bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json), -1, &e);
}
void write(const std::string& dir, const std::string& name, const w::Frame& f) {
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.put(static_cast<char>(0x21));  // control byte: chunk 34, budget 132
  out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  bson_t* body = doc(
      R"({"insert": "c", "ordered": true, "$db": "shop", "lsid": {"id": {"$binary": {"base64": "oxnytKF1QMe456OjLsJWvg==", "subType": "04"}}}})");
  bson_t* d1 = doc(
      R"({"_id": {"$oid": "5f1a2b3c4d5e6f708192a3b4"}, "s": "caf\u00e9", "d": 1.5, "t": {"$date": "2020-01-01T00:00:00Z"}, "n": null, "r": {"$regularExpression": {"pattern": "a", "options": "i"}}})");
  bson_t* d2 = doc(
      R"({"_id": 2, "a": [1, {"x": {"$numberDecimal": "1.5"}}], "ts": {"$timestamp": {"t": 1, "i": 2}}, "code": {"$code": "x", "$scope": {"y": 1}}})");
  bson_t* ping = doc(R"({"ping": 1, "$db": "admin"})");
  bson_t* ok = doc(R"({"ok": 1.0, "cursor": {"id": 0, "ns": "a.b", "firstBatch": []}})");
  w::DocumentSequence seq{"documents", {w::BsonView::of(d1), w::BsonView::of(d2)}};
  const w::Frame msg = w::build_op_msg(1, 0, 0, w::BsonView::of(body), {&seq, 1});
  write(dir, "seed_msg_seq", msg);
  write(dir, "seed_msg_checksum",
        w::build_op_msg(2, 0, w::kExhaustAllowed, w::BsonView::of(ping), {&seq, 1}, true));
  const w::BsonView docs[] = {w::BsonView::of(ok), w::BsonView::of(d1)};
  write(dir, "seed_reply", w::build_op_reply(3, 2, 8, 0, 0, docs));
  bson_t* wrapped = doc(R"({"$query": {"isMaster": 1}, "$readPreference": {"mode": "primary"}})");
  write(dir, "seed_query",
        w::build_op_query(4, 0, 4, "admin.$cmd", 0, -1, w::BsonView::of(wrapped)));
  for (auto c :
       {w::Compressor::noop, w::Compressor::snappy, w::Compressor::zlib, w::Compressor::zstd}) {
    auto f = w::build_op_compressed(msg, c);
    if (f) write(dir, std::string("seed_compressed_") + std::string(w::to_string(c)), *f);
  }
  write(dir, "seed_command",
        w::build_op_command(5, "db", "find", w::BsonView::of(ping), w::BsonView::of(body), docs));
  write(dir, "seed_command_reply",
        w::build_op_command_reply(6, 5, w::BsonView::of(ping), w::BsonView::of(ok), docs));
  write(dir, "seed_insert", w::build_op_insert(7, 0, "db.c", docs));
  write(dir, "seed_update",
        w::build_op_update(8, "db.c", 1, w::BsonView::of(d1), w::BsonView::of(d2)));
  write(dir, "seed_delete", w::build_op_delete(9, "db.c", 0, w::BsonView::of(d1)));
  write(dir, "seed_get_more", w::build_op_get_more(10, "db.c", 5, 77));
  const std::int64_t ids[] = {1, 2, 3};
  write(dir, "seed_kill_cursors", w::build_op_kill_cursors(11, ids));
  // Two frames back to back: the reader's path between frames.
  w::Frame two = msg;
  const w::Frame r = w::build_op_reply(12, 1, 0, 0, 0, docs);
  two.insert(two.end(), r.begin(), r.end());
  write(dir, "seed_two_frames", two);
  for (bson_t* b : {body, d1, d2, ping, ok, wrapped}) bson_destroy(b);
  return 0;
}
