// The CountPerAppSink example as a plugin:
//   varanus --plugin build/examples/libcount_per_app_plugin.so ...
// Its configuration (the config file's "config" object of a plugin sink):
//   {"output": "/path/counts.json"}   counts written there on shutdown
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>

#include "count_per_app_sink.hpp"
#include "varanus/sinks/plugin.hpp"

namespace {

std::unique_ptr<varanus::sinks::Sink> make_sink(std::string_view configJson) {
  const auto config = nlohmann::json::parse(configJson);  // throws: a clear error at start-up
  if (!config.is_object()) throw std::invalid_argument("config: expected an object");
  std::string output;
  for (const auto& [key, value] : config.items()) {
    if (key == "output" && value.is_string())
      output = value.get<std::string>();
    else
      throw std::invalid_argument("config: unknown key or wrong type: " + key);
  }
  return std::make_unique<example::CountPerAppSink>(output);
}

}  // namespace

VARANUS_SINK_PLUGIN("count-per-app", "counts commands per appName", make_sink)
