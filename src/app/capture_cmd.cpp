// `varanus replay` / `varanus sniff`: packets (libpcap) -> capture::Replayer
// (one monitor::Tracker per TCP connection, the proxy's own) -> the sinks.
//
// The sinks are the proxy's (SinkRuntime: stdout by default, or --config's
// outputs), but events are handed to them on this thread, synchronously,
// not through the Dispatcher's ring: a capture is read faster than a ring
// drains, and a replay must not drop events.
#include "capture_cmd.hpp"

#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "sink_config.hpp"
#include "summary.hpp"
#include "varanus/capture/pcap_source.hpp"
#include "varanus/capture/replayer.hpp"
#include "varanus/sinks/render.hpp"

namespace varanus::app {

namespace {

constexpr const char* kReplayUsage =
    R"(usage: varanus replay [options] FILE...

Reads pcap / pcapng captures (tcpdump -w, Wireshark) and prints the events the
proxy would have printed for the MongoDB traffic in them: every TCP connection
to one of the --port ports is reassembled both ways (retransmissions, out of
order, duplicated segments; a capture that starts mid-stream or misses
segments resynchronises on the next message header and says so on stderr)
and fed to the proxy's tracker. `t` is the packet's capture time, durations
come from packet times, client/server from the addresses; connectionClosed
at FIN, RST or the end of the capture. Link types: Ethernet (VLAN tags),
Linux cooked v1/v2, loopback/null, raw IP; IPv4 and IPv6.
)";

constexpr const char* kSniffUsage =
    R"(usage: varanus sniff -i IFACE [options]

Captures MongoDB traffic on a live interface (libpcap; needs CAP_NET_RAW:
run as root or `setcap cap_net_raw,cap_net_admin+eip varanus`) and prints the
events the proxy would have printed, as `varanus replay` does for files.
Runs until SIGINT/SIGTERM; then reports packets dropped by the kernel.

  -i, --interface IFACE     interface to capture on ("lo", "eth0", "any")
  --bpf EXPR                capture filter (default: tcp port P for each --port)
)";

constexpr const char* kCommonUsage =
    R"(
options:
  --port N                  a MongoDB server port (repeatable; default 27017)
  --config FILE             the proxy's config file: its "sinks" outputs and
                            maxDocumentLength / maxMessageSize apply
  --max-document-length N   bound on each document in an event line (default 1000)
  --max-message-size BYTES  larger messages are not inspected (default 48000000)
  --log-file PATH           events to a file instead of stdout
  --log-format FORMAT       varanus (default) or mongodb-log
  --plugin PATH             a sink plugin (repeatable)
  --summary                 at the end, a table per command name and namespace
                            (count, failures, p50/p95/p99/max, bytes), the 10
                            slowest commands with their documents, errors by
                            code (documents cut at --max-document-length, default
                            300 here); on stdout, instead of the event lines
                            unless --config / --log-file / --plugin name outputs
  --json                    the summary as one JSON document (implies --summary)
  -q, --quiet               no notes about the capture on stderr
  -h, --help                this text

stderr: one line per note (a connection that starts mid-stream, a gap, a
message that could not be decoded) and a last line of totals.
exit status: 0 ok, 1 a capture could not be read / opened, 2 usage error.
)";

struct Options {
  std::vector<std::string> files;
  std::string interface;
  std::string bpf;
  std::vector<std::uint16_t> ports;
  std::optional<std::string> configPath;
  std::optional<std::size_t> maxDocumentLength;
  std::optional<std::int32_t> maxMessageSize;
  SinkFlags sinkFlags;
  bool summary = false;
  bool json = false;
  bool quiet = false;
};

void err(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
}

template <class T>
std::optional<T> number(std::string_view s) {
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

/// Parses; returns an exit status for help/usage errors, nullopt to run.
std::optional<int> parse(int argc, char** argv, bool sniff, Options& o) {
  const std::string cmd = sniff ? "varanus sniff" : "varanus replay";
  auto usage = [&](FILE* f) {
    std::fputs(sniff ? kSniffUsage : kReplayUsage, f);
    std::fputs(kCommonUsage, f);
  };
  auto bad = [&](const std::string& why) {
    err(cmd + ": " + why + " (see " + cmd + " --help)");
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool hasValue = false;
    if (a.rfind("--", 0) == 0) {
      if (const auto eq = a.find('='); eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        hasValue = true;
      }
    }
    auto take = [&]() -> bool {
      if (hasValue) return true;
      if (i + 1 >= argc) return false;
      value = argv[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    }
    if (a == "--summary") {
      o.summary = true;
    } else if (a == "--json") {
      o.json = true;
      o.summary = true;
    } else if (a == "-q" || a == "--quiet") {
      o.quiet = true;
    } else if (a == "--port") {
      if (!take()) return bad("--port needs a value");
      const auto p = number<std::uint16_t>(value);
      if (!p || *p == 0) return bad("bad --port " + value);
      o.ports.push_back(*p);
    } else if (a == "--config") {
      if (!take()) return bad("--config needs a value");
      o.configPath = value;
    } else if (a == "--max-document-length") {
      if (!take()) return bad("--max-document-length needs a value");
      const auto n = number<std::size_t>(value);
      if (!n) return bad("bad --max-document-length " + value);
      o.maxDocumentLength = *n;
    } else if (a == "--max-message-size") {
      if (!take()) return bad("--max-message-size needs a value");
      const auto n = number<std::int32_t>(value);
      if (!n || *n <= 16) return bad("bad --max-message-size " + value);
      o.maxMessageSize = *n;
    } else if (sniff && (a == "-i" || a == "--interface")) {
      if (!take()) return bad(a + " needs a value");
      o.interface = value;
    } else if (sniff && a == "--bpf") {
      if (!take()) return bad("--bpf needs a value");
      o.bpf = value;
    } else if (is_sink_flag(a) && a != "--admin") {
      if (!take()) return bad(a + " needs a value");
      try {
        apply_sink_flag(o.sinkFlags, a, value);
      } catch (const SinkConfigError& e) {
        return bad(e.what());
      }
    } else if (a == "--") {
      for (++i; i < argc; ++i) o.files.emplace_back(argv[i]);
    } else if (!sniff && (a == "-" || a[0] != '-')) {
      o.files.push_back(a);
    } else {
      return bad("unknown option " + a);
    }
  }
  if (o.ports.empty()) o.ports.push_back(27017);
  if (!sniff && o.files.empty()) return bad("no capture file given");
  if (sniff && o.interface.empty()) return bad("-i IFACE is required");
  return std::nullopt;
}

/// Events to the sinks on this thread, and into the summary.
class DirectOutput final : public monitor::EventOutput {
 public:
  DirectOutput(std::vector<std::shared_ptr<sinks::Sink>> sinks, Summary* summary)
      : sinks_(std::move(sinks)), summary_(summary) {}
  void publish(monitor::Event&& e) override {
    if (summary_) summary_->add(e);
    if (sinks_.empty()) return;
    cache_.next();
    const sinks::RenderedEvent rendered(e, cache_);
    for (auto& s : sinks_) s->write(rendered);
    if (++unflushed_ >= 1024) flush();
  }
  void flush() {
    unflushed_ = 0;
    for (auto& s : sinks_) s->flush();
  }
  void close() {
    for (auto& s : sinks_) s->close();
  }

 private:
  std::vector<std::shared_ptr<sinks::Sink>> sinks_;
  Summary* summary_;
  sinks::RenderCache cache_;
  std::size_t unflushed_ = 0;
};

/// Everything both commands set up the same way.
struct Run {
  AppConfig cfg;
  SinkPlan plan;
  monitor::Stats stats;
  std::optional<SinkRuntime> runtime;
  std::optional<DirectOutput> output;
  std::optional<Summary> summary;
  capture::ReplayOptions replay;
  std::uint64_t notes = 0;
};

/// Returns an exit status on failure.
std::optional<int> setup(const Options& o, const std::string& cmd, Run& r) {
  try {
    if (o.configPath) load_config_file(*o.configPath, r.cfg);
    const std::size_t maxDoc = o.maxDocumentLength.value_or(r.cfg.maxDocumentLength);
    r.plan = plan_sinks(r.cfg.sinks, o.sinkFlags, maxDoc);
  } catch (const std::exception& e) {
    err(cmd + ": " + e.what());
    return 2;
  }
  const bool outputsNamed =
      !r.cfg.sinks.is_null() || o.sinkFlags.logFile.has_value() || !o.sinkFlags.plugins.empty();
  if (o.summary && !outputsNamed) r.plan.sinks.clear();  // the summary takes stdout
  r.plan.admin.reset();                                  // no admin endpoint without a proxy
  try {
    r.runtime.emplace(r.plan, r.stats, sinks::HealthCheck{},
                      [](std::string_view line) { err(std::string(line)); });
  } catch (const std::exception& e) {
    err(cmd + ": " + e.what());
    return 1;
  }
  if (o.summary) r.summary.emplace(o.maxDocumentLength.value_or(300));
  r.output.emplace(r.runtime->dispatcher().sinks(), r.summary ? &*r.summary : nullptr);
  r.replay.ports = o.ports;
  r.replay.tracker.maxMessageSize = o.maxMessageSize.value_or(r.cfg.tracker.maxMessageSize);
  if (o.summary) {
    r.replay.tracker.documentBound = {};  // whole documents: sizes and the slowest commands
  } else if (const auto bound = r.runtime->dispatcher().document_bound()) {
    r.replay.tracker.documentBound = *bound;
  } else {
    r.replay.tracker.captureDocuments = false;
  }
  if (!o.quiet) {
    r.replay.diagnostics = [&r, cmd](std::string_view line) {
      ++r.notes;
      err(cmd + ": " + std::string(line));
    };
  }
  return std::nullopt;
}

std::string totals(const capture::ReplayCounters& k) {
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "%llu packets (%llu bytes), %llu MongoDB segments, %llu connections "
      "(%llu mid-stream), %llu gaps (%llu bytes), %llu out-of-order segments, "
      "%llu duplicate bytes, %llu undecodable connections, %llu unknown opCodes",
      static_cast<unsigned long long>(k.packets), static_cast<unsigned long long>(k.bytes),
      static_cast<unsigned long long>(k.tcpSegments),
      static_cast<unsigned long long>(k.connections), static_cast<unsigned long long>(k.midstream),
      static_cast<unsigned long long>(k.gaps), static_cast<unsigned long long>(k.gapBytes),
      static_cast<unsigned long long>(k.outOfOrder),
      static_cast<unsigned long long>(k.duplicateBytes),
      static_cast<unsigned long long>(k.decodeStops),
      static_cast<unsigned long long>(k.unknownOpcodes));
  return buf;
}

void finish(Run& r, const Options& o) {
  r.output->flush();
  r.output->close();
  r.runtime->stop();
  if (r.summary) {
    const std::string text = o.json ? r.summary->to_json().dump(2) + "\n" : r.summary->table();
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }
}

std::atomic<bool> gStop{false};
capture::PcapSource* gSource = nullptr;

extern "C" void on_stop_signal(int) {
  gStop.store(true);
  if (gSource) gSource->break_loop();
}

}  // namespace

int run_replay(int argc, char** argv) {
  Options o;
  if (auto rc = parse(argc, argv, false, o)) return *rc;
  const std::string cmd = "varanus replay";
  Run r;
  if (auto rc = setup(o, cmd, r)) return *rc;
  capture::Replayer replayer(*r.output, r.replay);
  int status = 0;
  const auto started = std::chrono::steady_clock::now();
  for (const std::string& file : o.files) {
    try {
      capture::PcapSource src = capture::PcapSource::open_file(file);
      const int link = src.link_type();
      if (!capture::link_type_supported(link)) {
        err(cmd + ": " + file + ": link type " + std::to_string(link) + " is not supported");
        status = 1;
        continue;
      }
      src.loop([&](const capture::PacketView& p) {
        replayer.packet(link, p.time, p.data, p.wireLength);
      });
    } catch (const capture::CaptureError& e) {
      err(cmd + ": " + e.what());
      status = 1;
    }
  }
  replayer.finish();
  finish(r, o);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!o.quiet) {
    char rate[64];
    std::snprintf(rate, sizeof rate, " in %.2f s", secs);
    err(cmd + ": " + totals(replayer.counters()) + rate);
  }
  return status;
}

int run_sniff(int argc, char** argv) {
  Options o;
  if (auto rc = parse(argc, argv, true, o)) return *rc;
  const std::string cmd = "varanus sniff";
  capture::PcapSource::LiveOptions live;
  live.interface = o.interface;
  live.filter = o.bpf;
  if (live.filter.empty()) {
    for (std::size_t i = 0; i < o.ports.size(); ++i)
      live.filter += (i ? " or tcp port " : "tcp port ") + std::to_string(o.ports[i]);
  }
  std::optional<capture::PcapSource> src;
  try {
    src.emplace(capture::PcapSource::open_live(live));
  } catch (const capture::CaptureError& e) {
    err(cmd + ": " + e.what());
    return 1;
  }
  const int link = src->link_type();
  if (!capture::link_type_supported(link)) {
    err(cmd + ": " + o.interface + ": link type " + std::to_string(link) + " is not supported");
    return 1;
  }
  Run r;
  if (auto rc = setup(o, cmd, r)) return *rc;
  capture::Replayer replayer(*r.output, r.replay);
  gSource = &*src;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGPIPE, SIG_IGN);
  err(cmd + ": capturing on " + o.interface + " (" + live.filter + ")");
  std::uint64_t reportedDrops = 0;
  auto lastReport = std::chrono::steady_clock::now();
  int status = 0;
  try {
    while (!gStop.load()) {
      if (!src->dispatch([&](const capture::PacketView& p) {
            replayer.packet(link, p.time, p.data, p.wireLength);
          }))
        break;
      r.output->flush();
      const auto now = std::chrono::steady_clock::now();
      if (now - lastReport >= std::chrono::seconds(10)) {
        lastReport = now;
        const auto k = src->stats();
        if (k.dropped != reportedDrops) {
          err(cmd + ": " + std::to_string(k.dropped - reportedDrops) +
              " packets dropped by the kernel (buffer full); events may be missing");
          reportedDrops = k.dropped;
        }
      }
    }
  } catch (const capture::CaptureError& e) {
    err(cmd + ": " + e.what());
    status = 1;
  }
  gSource = nullptr;
  // What the kernel captured before the signal still counts.
  try {
    src->drain(
        [&](const capture::PacketView& p) { replayer.packet(link, p.time, p.data, p.wireLength); });
  } catch (const capture::CaptureError&) {
  }
  const auto k = src->stats();
  replayer.finish(std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::system_clock::now().time_since_epoch()));
  finish(r, o);
  err(cmd + ": " + totals(replayer.counters()) + "; kernel: " + std::to_string(k.received) +
      " received, " + std::to_string(k.dropped) + " dropped, " +
      std::to_string(k.droppedByInterface) + " dropped by the interface");
  return status;
}

}  // namespace varanus::app
