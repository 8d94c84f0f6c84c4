// varanus-stub — a protocol-faithful MongoDB stand-in for varanus's tests,
// benchmarks and demo. See docs/stub.md.
#include <cstdio>

#include "options.hpp"
#include "server.hpp"

int main(int argc, char** argv) {
  auto parsed = varanus::stub::parse_options(argc, argv);
  if (parsed.help) {
    std::fputs(parsed.message.c_str(), stdout);
    return 0;
  }
  if (!parsed.options) {
    std::fputs(parsed.message.c_str(), stderr);
    return 2;
  }
  try {
    return varanus::stub::run_server(*parsed.options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "varanus-stub: %s\n", e.what());
    return 1;
  }
}
