// Plugin loader: dlopen, descriptor checks, factory call — every failure a
// PluginError that names the file and says what to do.
#include "varanus/sinks/plugin.hpp"

#include <dlfcn.h>

namespace varanus::sinks {

std::shared_ptr<Sink> load_sink_plugin(const std::string& path, const std::string& configJson) {
  const std::string who = "plugin " + path + ": ";
  ::dlerror();
  void* raw = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (raw == nullptr) {
    const char* err = ::dlerror();
    std::string why = err ? err : "unknown error";
    if (why.find("undefined symbol") != std::string::npos &&
        why.find("varanus") != std::string::npos)
      why += " (the loading executable must export varanus's symbols: CMake ENABLE_EXPORTS)";
    throw PluginError(who + "cannot load: " + why);
  }
  std::shared_ptr<void> handle(raw, [](void* h) { ::dlclose(h); });

  using Entry = const varanus_sink_plugin_descriptor* (*)();
  void* sym = ::dlsym(raw, VARANUS_SINK_PLUGIN_SYMBOL);
  if (sym == nullptr)
    throw PluginError(who + "no '" VARANUS_SINK_PLUGIN_SYMBOL
                            "' symbol: not a varanus sink plugin (define it with "
                            "VARANUS_SINK_PLUGIN from varanus/sinks/plugin.hpp)");
  const auto entry = reinterpret_cast<Entry>(sym);
  const varanus_sink_plugin_descriptor* d = entry();
  if (d == nullptr) throw PluginError(who + VARANUS_SINK_PLUGIN_SYMBOL "() returned null");
  if (d->abiVersion != VARANUS_SINK_PLUGIN_ABI_VERSION)
    throw PluginError(who + "plugin ABI version " + std::to_string(d->abiVersion) +
                      ", this varanus needs " + std::to_string(VARANUS_SINK_PLUGIN_ABI_VERSION) +
                      ": rebuild the plugin against this varanus's headers");
  if (d->sinkSize != sizeof(Sink))
    throw PluginError(who + "built against different varanus headers (sizeof(Sink) " +
                      std::to_string(d->sinkSize) + " there, " + std::to_string(sizeof(Sink)) +
                      " here): rebuild the plugin");
  if (d->create == nullptr || d->destroy == nullptr)
    throw PluginError(who + "descriptor without create/destroy");

  char error[512] = {};
  Sink* sink = d->create(configJson.c_str(), error, sizeof error);
  if (sink == nullptr)
    throw PluginError(who + (d->name ? d->name : "?") + ": " +
                      (error[0] != '\0' ? error : "create() returned no sink"));
  auto destroy = d->destroy;
  // The deleter keeps the library loaded until the sink is gone.
  return std::shared_ptr<Sink>(sink, [destroy, handle](Sink* s) { destroy(s); });
}

}  // namespace varanus::sinks
