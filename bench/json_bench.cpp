// varanus-json-bench: the fast relaxed JSON writer (wire::append_relaxed_json)
// against libbson's bson_as_relaxed_extended_json on a ~240-byte find
// command. Not a test: prints microseconds per document for each.
#include <bson/bson.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "varanus/wire/json.hpp"

namespace {

template <class F>
double us_per_doc(int n, F&& f) {
  for (int i = 0; i < n / 10; ++i) f();  // warm up
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) f();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 200000;
  const char* json =
      R"({"find": "orders", "filter": {"status": "shipped", "total": {"$gte": 100.5}},)"
      R"( "sort": {"createdAt": -1}, "limit": 20, "batchSize": 20,)"
      R"( "lsid": {"id": {"$binary": {"base64": "oxnytKF1QMe456OjLsJWvg==", "subType": "04"}}},)"
      R"( "$clusterTime": {"clusterTime": {"$timestamp": {"t": 1700000000, "i": 1}}},)"
      R"( "$db": "shop", "$readPreference": {"mode": "primaryPreferred"}})";
  bson_error_t err;
  bson_t* doc = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json), -1, &err);
  if (doc == nullptr) {
    std::fprintf(stderr, "bad json: %s\n", err.message);
    return 1;
  }
  const varanus::wire::BsonView view = varanus::wire::BsonView::of(doc);
  std::string out;
  std::size_t sink = 0;
  const double ours = us_per_doc(n, [&] {
    out.clear();  // the buffer is reused, as a sink thread does
    varanus::wire::append_relaxed_json(out, view);
    sink += out.size();
  });
  const double bounded = us_per_doc(n, [&] {
    out.clear();
    varanus::wire::append_relaxed_json(out, view, {100});
    sink += out.size();
  });
  const double lib = us_per_doc(n, [&] {
    std::size_t len = 0;
    char* s = bson_as_relaxed_extended_json(doc, &len);
    sink += len;
    bson_free(s);
  });
  out.clear();
  varanus::wire::append_relaxed_json(out, view);
  std::printf("document: %u bytes of BSON, %zu bytes of JSON\n", doc->len, out.size());
  std::printf("varanus append_relaxed_json        %.3f us/doc\n", ours);
  std::printf("varanus append_relaxed_json (100)  %.3f us/doc\n", bounded);
  std::printf("libbson bson_as_relaxed_extended_json %.3f us/doc\n", lib);
  std::printf("speed-up %.1fx (checksum %zu)\n", lib / ours, sink);
  bson_destroy(doc);
  return 0;
}
