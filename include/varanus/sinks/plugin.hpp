// varanus::sinks — sinks loaded from shared libraries (`--plugin lib.so`).
//
// A plugin is a shared library, built against these headers, that exports
// one C symbol, `varanus_sink_plugin`, returning a versioned descriptor
// (a plain C struct) with a factory. Write it with the macro:
//
//   #include "varanus/sinks/plugin.hpp"
//   class MySink : public varanus::sinks::Sink { ... };
//   std::unique_ptr<varanus::sinks::Sink> make_my_sink(std::string_view configJson) {
//     return std::make_unique<MySink>(...);   // throw to refuse the config
//   }
//   VARANUS_SINK_PLUGIN("my-sink", "what it does", make_my_sink)
//
// Build it as a MODULE library without linking varanus: the Sink base class
// comes from the varanus executable, which exports its symbols (CMake
// ENABLE_EXPORTS). The descriptor carries the ABI version and sizeof(Sink)
// so that a plugin built against another varanus is refused with a clear
// message instead of crashing. The sink runs on the sink thread like any
// other (see sink.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "varanus/sinks/sink.hpp"

/// Bumped whenever the descriptor or the Sink class changes incompatibly.
#define VARANUS_SINK_PLUGIN_ABI_VERSION 1u

extern "C" {
/// What `varanus_sink_plugin()` returns. Plain C layout.
struct varanus_sink_plugin_descriptor {
  std::uint32_t abiVersion;  ///< VARANUS_SINK_PLUGIN_ABI_VERSION of the plugin's build
  std::uint32_t sinkSize;    ///< sizeof(varanus::sinks::Sink) of the plugin's build
  const char* name;          ///< short name ("count-per-app")
  const char* description;   ///< one line for --check-config and errors
  /// Creates a sink from its JSON configuration ("{}" when none). On failure
  /// returns null and writes a NUL-terminated message into `error`.
  varanus::sinks::Sink* (*create)(const char* configJson, char* error, std::size_t errorSize);
  /// Destroys a sink made by create (in the plugin, with its allocator).
  void (*destroy)(varanus::sinks::Sink* sink);
};
}

/// The exported symbol's name.
#define VARANUS_SINK_PLUGIN_SYMBOL "varanus_sink_plugin"

/// Defines the plugin's entry point. FACTORY: a function
/// `std::unique_ptr<varanus::sinks::Sink>(std::string_view configJson)`.
#define VARANUS_SINK_PLUGIN(NAME, DESCRIPTION, FACTORY)                                         \
  extern "C" __attribute__((visibility("default"))) const varanus_sink_plugin_descriptor*       \
  varanus_sink_plugin() {                                                                       \
    static const varanus_sink_plugin_descriptor descriptor{                                     \
        VARANUS_SINK_PLUGIN_ABI_VERSION,                                                        \
        static_cast<std::uint32_t>(sizeof(::varanus::sinks::Sink)),                             \
        NAME,                                                                                   \
        DESCRIPTION,                                                                            \
        [](const char* config, char* error, std::size_t errorSize) -> ::varanus::sinks::Sink* { \
          try {                                                                                 \
            return FACTORY(std::string_view(config)).release();                                 \
          } catch (const std::exception& e) {                                                   \
            std::snprintf(error, errorSize, "%s", e.what());                                    \
          } catch (...) {                                                                       \
            std::snprintf(error, errorSize, "unknown exception");                               \
          }                                                                                     \
          return nullptr;                                                                       \
        },                                                                                      \
        [](::varanus::sinks::Sink* sink) { delete sink; }};                                     \
    return &descriptor;                                                                         \
  }

namespace varanus::sinks {

/// A plugin that cannot be used; what() names the file and the reason.
class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Loads `path` (dlopen, RTLD_NOW), checks the descriptor and creates the
/// sink with `configJson`. The library stays loaded while the sink lives.
/// Throws PluginError: file missing or not loadable (undefined symbols
/// included), no `varanus_sink_plugin` symbol, ABI or Sink size mismatch,
/// the factory refusing (its message), or returning nothing.
std::shared_ptr<Sink> load_sink_plugin(const std::string& path,
                                       const std::string& configJson = "{}");

}  // namespace varanus::sinks
