// Deliberately broken plugins for plugin_test.cpp, one per BAD_PLUGIN_* define.
#include <memory>
#include <stdexcept>
#include <string_view>

#include "varanus/sinks/plugin.hpp"

#if defined(BAD_PLUGIN_NO_SYMBOL)
extern "C" __attribute__((visibility("default"))) int not_a_varanus_plugin() {
  return 1;
}
#elif defined(BAD_PLUGIN_WRONG_ABI)
extern "C" __attribute__((visibility("default"))) const varanus_sink_plugin_descriptor*
varanus_sink_plugin() {
  static const varanus_sink_plugin_descriptor d{99,      0,      "future", "from the future",
                                                nullptr, nullptr};
  return &d;
}
#elif defined(BAD_PLUGIN_THROWS)
namespace {
std::unique_ptr<varanus::sinks::Sink> refuse(std::string_view) {
  throw std::runtime_error("needs a 'collector' key");
}
}  // namespace
VARANUS_SINK_PLUGIN("refuser", "always refuses its config", refuse)
#endif
