// An example user sink: counts the commands each application sends
// (by the handshake's appName), as PyMongo users do with a CommandListener.
//
// Used two ways (see examples/CMakeLists.txt):
//  - embedded: embed_proxy.cpp links varanus as a library and registers it;
//  - as a plugin: count_per_app_plugin.cpp builds it into a shared library
//    that `varanus --plugin` (or load_sink_plugin) loads.
#pragma once

#include <fstream>
#include <map>
#include <mutex>
#include <string>

#include "varanus/sinks/sink.hpp"

namespace example {

class CountPerAppSink : public varanus::sinks::Sink {
 public:
  /// `outputPath`: where close() writes the counts as JSON ({"app": n, ...});
  /// empty = nowhere (read them with counts()).
  explicit CountPerAppSink(std::string outputPath = {})
      : Sink("count-per-app"), outputPath_(std::move(outputPath)) {
    // Handshake and heartbeat hellos are the drivers' business, not the app's.
    varanus::sinks::SinkFilter f;
    f.keepHellos = false;
    f.connectionEvents = false;
    set_filter(f);
  }

  /// A copy of the counts; any thread (the sink thread writes them).
  std::map<std::string, std::uint64_t> counts() const {
    std::lock_guard lock(mutex_);
    return counts_;
  }

 protected:
  // Runs on the sink thread, never on an I/O thread: take your time (a bit).
  void write_(const varanus::sinks::RenderedEvent& event) override {
    const auto& e = event.event();
    if (e.type != varanus::monitor::EventType::commandStarted) return;
    const std::string& app = e.connection && !e.connection->appName.empty()
                                 ? e.connection->appName
                                 : std::string("(no appName)");
    std::lock_guard lock(mutex_);
    ++counts_[app];
  }

  void close_() override {
    if (outputPath_.empty()) return;
    std::ofstream out(outputPath_);
    out << '{';
    bool first = true;
    for (const auto& [app, n] : counts()) {
      out << (first ? "" : ",") << '"' << app << "\":" << n;
      first = false;
    }
    out << "}\n";
  }

 private:
  std::string outputPath_;
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> counts_;
};

}  // namespace example
