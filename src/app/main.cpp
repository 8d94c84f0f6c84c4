// varanus: subcommand dispatch. No subcommand runs the proxy.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "decode.hpp"

namespace {

constexpr const char* kUsage =
    "usage: varanus [OPTIONS]          run the proxy\n"
    "       varanus decode FILE...     decode raw wire frames to JSON lines\n"
    "       varanus --help             this text\n";

int run_proxy(int /*argc*/, char** /*argv*/) {
  std::fputs("varanus: proxy not built yet\n", stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2) {
    const std::string_view cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (cmd == "decode") return varanus::app::run_decode(argc - 1, argv + 1);
  }
  return run_proxy(argc, argv);
}
