#include "decode.hpp"

#include <cstdio>

namespace varanus::app {

int run_decode(int, char**) {
  std::fputs("varanus decode: not implemented yet\n", stderr);
  return 2;
}

}  // namespace varanus::app
