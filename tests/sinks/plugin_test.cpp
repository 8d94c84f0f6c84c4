// Plugins: the example plugin loaded and fed events; bad plugins refused
// with messages that say what is wrong.
#include "varanus/sinks/plugin.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "sink_test_util.hpp"
#include "varanus/sinks/dispatcher.hpp"

using namespace varanus;
using namespace sinks_test;

TEST_CASE("the example plugin loads, counts commands per app, and writes them on close") {
  TempDir dir;
  const std::string out = (dir.path / "counts.json").string();
  auto sink = sinks::load_sink_plugin(VARANUS_EXAMPLE_PLUGIN, R"({"output": ")" + out + R"("})");
  CHECK(sink->name() == "count-per-app");
  monitor::Stats stats;
  {
    sinks::Dispatcher d(stats);
    d.add(sink);
    d.start();
    d.publish(started(1));
    d.publish(succeeded(1));
    d.publish(started(2));
    monitor::Event hello = started(3);
    hello.hello = monitor::HelloKind::handshake;
    d.publish(std::move(hello));  // filtered out by the plugin
    d.stop();
  }
  std::ifstream in(out);
  const auto counts = nlohmann::json::parse(in);
  CHECK(counts == nlohmann::json::parse(R"({"orders": 2})"));
  CHECK(sink->filtered() == 1);
}

TEST_CASE("bad plugins are refused with a clear error") {
  using sinks::PluginError;
  CHECK_THROWS_WITH_AS(sinks::load_sink_plugin("/nonexistent/libnothing.so"),
                       doctest::Contains("plugin /nonexistent/libnothing.so: cannot load"),
                       PluginError);
  CHECK_THROWS_WITH_AS(sinks::load_sink_plugin(VARANUS_BAD_PLUGIN_NO_SYMBOL),
                       doctest::Contains("not a varanus sink plugin"), PluginError);
  CHECK_THROWS_WITH_AS(sinks::load_sink_plugin(VARANUS_BAD_PLUGIN_WRONG_ABI),
                       doctest::Contains("plugin ABI version 99, this varanus needs 1"),
                       PluginError);
  CHECK_THROWS_WITH_AS(sinks::load_sink_plugin(VARANUS_BAD_PLUGIN_THROWS),
                       doctest::Contains("refuser: needs a 'collector' key"), PluginError);
  CHECK_THROWS_WITH_AS(sinks::load_sink_plugin(VARANUS_EXAMPLE_PLUGIN, "{not json"),
                       doctest::Contains("count-per-app: "), PluginError);
}
