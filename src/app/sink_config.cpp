// varanus app — the "sinks" config section, the sink flags, SinkRuntime.
// See sink_config.hpp for the schema.
#include "sink_config.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "json_config.hpp"
#include "varanus/monitor/sdam_events.hpp"
#include "varanus/proxy/config.hpp"
#include "varanus/sinks/plugin.hpp"

namespace varanus::app {

namespace {

using nlohmann::json;
using Json = JsonFields<SinkConfigError>;

double expect_number(const json& v, const std::string& path, double min, double max) {
  if (!v.is_number()) Json::fail(path, "expected number");
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < min || d > max)
    Json::fail(path,
               "expected a number from " + std::to_string(min) + " to " + std::to_string(max));
  return d;
}

std::vector<std::string> expect_strings(const json& v, const std::string& path) {
  if (!v.is_array()) Json::fail(path, "expected array of strings");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < v.size(); ++i) out.push_back(Json::string(v[i], json_child(path, i)));
  return out;
}

sinks::Format expect_format(const json& v, const std::string& path) {
  sinks::Format f{};
  if (!sinks::parse_format(Json::string(v, path), f))
    Json::fail(path, "expected \"varanus\" or \"mongodb-log\"");
  return f;
}

proxy::Endpoint expect_endpoint(const json& v, const std::string& path) {
  const std::string s = Json::string(v, path);
  auto ep = proxy::Endpoint::parse(s);
  if (!ep) Json::fail(path, "expected \"HOST:PORT\", got \"" + s + "\"");
  return *ep;
}

/// A list of event names, each one varanus emits (or the SDAM events of
/// the topology monitor to come): a typo would otherwise filter silently.
std::vector<std::string> expect_event_names(const json& v, const std::string& path) {
  std::vector<std::string> names = expect_strings(v, path);
  auto iequals = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  };
  std::vector<std::string_view> known;
  for (auto t : {monitor::EventType::commandStarted, monitor::EventType::commandSucceeded,
                 monitor::EventType::commandFailed, monitor::EventType::connectionOpened,
                 monitor::EventType::connectionClosed})
    known.push_back(monitor::to_string(t));
  for (auto n : monitor::sdam::kTopologyEventNames) known.push_back(n);
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (std::none_of(known.begin(), known.end(), [&](auto k) { return iequals(k, names[i]); })) {
      std::string list;
      for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      Json::fail(json_child(path, i),
                 "unknown event name \"" + names[i] + "\" (known: " + list + ")");
    }
  }
  return names;
}

sinks::SinkFilter parse_filter(const json& v, const std::string& path) {
  sinks::SinkFilter f;
  for (const auto& [key, value] : Json::object(v, path)) {
    const std::string p = json_child(path, key);
    if (is_comment_key(key)) continue;
    if (key == "includeEvents")
      f.includeEvents = expect_event_names(value, p);
    else if (key == "excludeEvents")
      f.excludeEvents = expect_event_names(value, p);
    else if (key == "includeCommands")
      f.includeCommands = expect_strings(value, p);
    else if (key == "excludeCommands")
      f.excludeCommands = expect_strings(value, p);
    else if (key == "includeDatabases")
      f.includeDatabases = expect_strings(value, p);
    else if (key == "excludeDatabases")
      f.excludeDatabases = expect_strings(value, p);
    else if (key == "minDurationMicros")
      f.minDurationMicros = Json::integer(value, p, 0, std::numeric_limits<std::int64_t>::max());
    else if (key == "failedOnly")
      f.failedOnly = Json::boolean(value, p);
    else if (key == "sampleRate")
      f.sampleRate = expect_number(value, p, 0.0, 1.0);
    else if (key == "keepHellos")
      f.keepHellos = Json::boolean(value, p);
    else if (key == "connectionEvents")
      f.connectionEvents = Json::boolean(value, p);
    else
      Json::fail(p, "unknown key");
  }
  return f;
}

std::chrono::milliseconds expect_seconds(const json& v, const std::string& path, double min,
                                         double max) {
  return std::chrono::milliseconds(std::llround(expect_number(v, path, min, max) * 1000.0));
}

// The keys of an otlp sink; false when `key` is none of them.
bool parse_otlp_key(sinks::OtlpOptions& o, const std::string& key, const json& value,
                    const std::string& p) {
  if (key == "endpoint") {
    o.endpoint = Json::string(value, p);
    std::string err;
    if (!sinks::parse_http_url(o.endpoint, &err)) Json::fail(p, err);
  } else if (key == "headers") {
    for (const auto& [k, v] : Json::object(value, p)) {
      if (k.empty() || k.find_first_of(":\r\n ") != std::string::npos)
        Json::fail(json_child(p, k), "not a header name");
      const std::string h = Json::string(v, json_child(p, k));
      if (h.find_first_of("\r\n") != std::string::npos)
        Json::fail(json_child(p, k), "line break in a header");
      o.headers.emplace_back(k, h);
    }
  } else if (key == "serviceName") {
    o.serviceName = Json::string(value, p);
    if (o.serviceName.empty()) Json::fail(p, "must not be empty");
  } else if (key == "gzip") {
    o.gzip = Json::boolean(value, p);
  } else if (key == "includeHellos") {
    o.includeHellos = Json::boolean(value, p);
  } else if (key == "queryText") {
    o.queryText = Json::boolean(value, p);
  } else if (key == "maxQueueSpans") {
    o.maxQueueSpans = static_cast<std::size_t>(Json::integer(value, p, 1, 1 << 24));
  } else if (key == "maxBatchSpans") {
    o.maxBatchSpans = static_cast<std::size_t>(Json::integer(value, p, 1, 65536));
  } else if (key == "batchDelaySeconds") {
    o.batchDelay = expect_seconds(value, p, 0.001, 3600);
  } else if (key == "timeoutSeconds") {
    o.timeout = expect_seconds(value, p, 0.001, 3600);
  } else if (key == "minBackoffSeconds") {
    o.minBackoff = expect_seconds(value, p, 0.001, 3600);
  } else if (key == "maxBackoffSeconds") {
    o.maxBackoff = expect_seconds(value, p, 0.001, 3600);
  } else if (key == "closeTimeoutSeconds") {
    o.closeTimeout = expect_seconds(value, p, 0, 3600);
  } else if (key == "maxRetries") {
    o.maxRetries = static_cast<unsigned>(Json::integer(value, p, 0, 100));
  } else {
    return false;
  }
  return true;
}

SinkSpec parse_output(const json& v, const std::string& path,
                      const sinks::RenderOptions& defaults) {
  const auto& obj = Json::object(v, path);
  SinkSpec spec;
  spec.where = path;
  spec.render = defaults;
  const auto type = obj.find("type");
  if (type == obj.end())
    Json::fail(path, "missing \"type\" (stdout, stderr, file, tcp, udp, plugin, otlp)");
  const std::string t = Json::string(type->second, json_child(path, "type"));
  using T = SinkSpec::Type;
  if (t == "stdout")
    spec.type = T::stdoutSink;
  else if (t == "stderr")
    spec.type = T::stderrSink;
  else if (t == "file")
    spec.type = T::file;
  else if (t == "tcp")
    spec.type = T::tcp;
  else if (t == "udp")
    spec.type = T::udp;
  else if (t == "plugin")
    spec.type = T::plugin;
  else if (t == "otlp")
    spec.type = T::otlp;
  else
    Json::fail(json_child(path, "type"),
               "expected one of stdout, stderr, file, tcp, udp, plugin, otlp; got \"" + t + "\"");

  bool hasPath = false, hasAddress = false;
  for (const auto& [key, value] : obj) {
    const std::string p = json_child(path, key);
    if (is_comment_key(key) || key == "type") continue;
    const bool file = spec.type == T::file, net = spec.type == T::tcp || spec.type == T::udp,
               plugin = spec.type == T::plugin;
    if (key == "format" || key == "maxDocumentLength" || key == "redaction" || key == "lines" ||
        key == "documents" || key == "extendedJson")
      spec.renderSet = true;
    if (key == "format") {
      spec.render.format = expect_format(value, p);
    } else if (key == "maxDocumentLength") {
      spec.render.maxDocumentLength = static_cast<std::size_t>(
          Json::integer(value, p, 0, std::numeric_limits<std::int32_t>::max()));
    } else if (key == "redaction") {
      if (!sinks::parse_redaction(Json::string(value, p), spec.render.redaction))
        Json::fail(p, "expected \"none\" or \"values\"");
    } else if (key == "lines") {
      if (!sinks::parse_lines(Json::string(value, p), spec.render.lines))
        Json::fail(p, "expected \"events\" or \"commands\"");
    } else if (key == "documents") {
      if (!sinks::parse_documents(Json::string(value, p), spec.render.documents))
        Json::fail(p, "expected \"object\" or \"string\"");
    } else if (key == "extendedJson") {
      if (!sinks::parse_extended_json(Json::string(value, p), spec.render.extendedJson))
        Json::fail(p, "expected \"relaxed\" or \"canonical\"");
    } else if (key == "filter") {
      spec.filter = parse_filter(value, p);
      spec.filterSet = true;
    } else if (key == "path" && (file || plugin)) {
      (file ? spec.file.path : spec.pluginPath) = Json::string(value, p);
      if ((file ? spec.file.path : spec.pluginPath).empty()) Json::fail(p, "must not be empty");
      hasPath = true;
    } else if (key == "rotateBytes" && file) {
      spec.file.rotateBytes = static_cast<std::uint64_t>(
          Json::integer(value, p, 0, std::numeric_limits<std::int64_t>::max()));
    } else if (key == "keepFiles" && file) {
      spec.file.keepFiles = static_cast<unsigned>(Json::integer(value, p, 0, 1000));
    } else if (key == "address" && net) {
      const proxy::Endpoint ep = expect_endpoint(value, p);
      spec.net.host = ep.host;
      spec.net.port = ep.port;
      if (ep.port == 0) Json::fail(p, "port 0 is not a collector's port");
      hasAddress = true;
    } else if (key == "maxBufferBytes" && spec.type == T::tcp) {
      spec.net.maxBufferBytes =
          static_cast<std::size_t>(Json::integer(value, p, 1024, std::int64_t{1} << 34));
    } else if (key == "config" && plugin) {
      spec.pluginConfig = Json::object(value, p).empty() ? "{}" : value.dump();
    } else if (spec.type == T::otlp && parse_otlp_key(spec.otlp, key, value, p)) {
      hasAddress = hasAddress || key == "endpoint";
    } else {
      Json::fail(p, "unknown key for a " + t + " sink");
    }
  }
  if ((spec.type == T::file || spec.type == T::plugin) && !hasPath)
    Json::fail(path, "a " + t + " sink needs \"path\"");
  if (spec.type == T::otlp && !hasAddress)
    Json::fail(path, "an otlp sink needs \"endpoint\" (\"http://HOST:4318\")");
  if ((spec.type == T::tcp || spec.type == T::udp) && !hasAddress)
    Json::fail(path, "a " + t + " sink needs \"address\" (\"HOST:PORT\")");
  return spec;
}

const char* type_name(SinkSpec::Type t) {
  switch (t) {
    case SinkSpec::Type::stdoutSink:
      return "stdout";
    case SinkSpec::Type::stderrSink:
      return "stderr";
    case SinkSpec::Type::file:
      return "file";
    case SinkSpec::Type::tcp:
      return "tcp";
    case SinkSpec::Type::udp:
      return "udp";
    case SinkSpec::Type::plugin:
      return "plugin";
    case SinkSpec::Type::otlp:
      return "otlp";
  }
  return "?";
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

}  // namespace

bool is_sink_flag(std::string_view flag) noexcept {
  return flag == "--log-file" || flag == "--log-format" || flag == "--log-lines" ||
         flag == "--admin" || flag == "--plugin" || flag == "--otlp-endpoint";
}

void apply_sink_flag(SinkFlags& flags, std::string_view flag, const std::string& value) {
  const std::string f(flag);
  if (flag == "--log-file") {
    if (value.empty()) throw SinkConfigError(f + ": expected a path");
    flags.logFile = value;
  } else if (flag == "--log-format") {
    sinks::Format unused{};
    if (!sinks::parse_format(value, unused))
      throw SinkConfigError(f + ": expected varanus or mongodb-log, got '" + value + "'");
    flags.logFormat = value;
  } else if (flag == "--log-lines") {
    sinks::Lines unused{};
    if (!sinks::parse_lines(value, unused))
      throw SinkConfigError(f + ": expected events or commands, got '" + value + "'");
    flags.logLines = value;
  } else if (flag == "--admin") {
    if (!proxy::Endpoint::parse(value))
      throw SinkConfigError(f + ": expected HOST:PORT, got '" + value + "'");
    flags.admin = value;
  } else if (flag == "--plugin") {
    if (value.empty()) throw SinkConfigError(f + ": expected a path");
    flags.plugins.push_back(value);
  } else if (flag == "--otlp-endpoint") {
    std::string err;
    if (!sinks::parse_http_url(value, &err)) throw SinkConfigError(f + ": " + err);
    flags.otlpEndpoint = value;
  } else {
    throw SinkConfigError(f + ": not a sink option");
  }
}

std::string sink_flags_usage() {
  return R"(  --log-file PATH           events as JSON lines appended to PATH instead of stdout
                            (reopened on SIGHUP, for logrotate)
  --log-format FORMAT       varanus (default: one JSON object per event, keys as the
                            drivers' monitoring API names them; see the README's
                            "Event lines") or mongodb-log (the command logging spec's)
  --log-lines LINES         events (default: a started and a succeeded/failed line per
                            command) or commands (one "command" line when it finishes:
                            command, reply or failure, duration, nReturned, n, cursorId...)
  --admin HOST:PORT         admin HTTP endpoint: /metrics (Prometheus), /healthz, /stats,
                            /stats/commands (per database, collection, command: counts,
                            p50/p95/p99 times, bytes; what `varanus top` shows)
                            (port 0 picks a free port, named in a start-up line)
  --plugin PATH             load a sink from a shared library (repeatable)
  --otlp-endpoint URL       send a span per command to an OpenTelemetry collector:
                            OTLP/HTTP JSON, POST URL/v1/traces (e.g. http://127.0.0.1:4318);
                            a {"type": "otlp"} sink in the config sets headers, gzip,
                            serviceName, queryText, includeHellos
)";
}

SinkPlan plan_sinks(const json& section, const SinkFlags& flags, std::size_t maxDocumentLength) {
  SinkPlan plan;
  plan.version = VARANUS_VERSION;
  sinks::RenderOptions defaults;
  defaults.maxDocumentLength = maxDocumentLength;
  if (flags.logFormat) sinks::parse_format(*flags.logFormat, defaults.format);
  if (flags.logLines) sinks::parse_lines(*flags.logLines, defaults.lines);

  const json* outputs = nullptr;
  std::string outputsPath = "/sinks/outputs";
  if (section.is_array()) {
    outputs = &section;
    outputsPath = "/sinks";
  } else if (!section.is_null()) {
    for (const auto& [key, value] : Json::object(section, "/sinks")) {
      const std::string p = json_child("/sinks", key);
      if (is_comment_key(key)) continue;
      if (key == "queueSize") {
        plan.queueSize = static_cast<std::size_t>(Json::integer(value, p, 2, 1 << 24));
      } else if (key == "dropWarningIntervalSeconds") {
        plan.dropWarningInterval =
            std::chrono::milliseconds(std::llround(expect_number(value, p, 0.0, 86400.0) * 1000.0));
      } else if (key == "admin") {
        sinks::AdminOptions a;
        for (const auto& [k, v] : Json::object(value, p)) {
          const std::string q = json_child(p, k);
          if (is_comment_key(k)) continue;
          if (k == "listen") {
            const proxy::Endpoint ep = expect_endpoint(v, q);
            a.host = ep.host;
            a.port = ep.port;
          } else if (k == "maxDatabases") {
            plan.metrics.maxDatabases = static_cast<std::size_t>(Json::integer(v, q, 0, 10000));
          } else if (k == "maxCommandStats") {
            plan.commandStats.maxEntries = static_cast<std::size_t>(Json::integer(v, q, 1, 100000));
          } else if (k == "maxConnections") {
            a.maxConnections = static_cast<std::size_t>(Json::integer(v, q, 1, 100000));
          } else {
            Json::fail(q, "unknown key");
          }
        }
        plan.admin = a;
      } else if (key == "outputs") {
        if (!value.is_array()) Json::fail(p, "expected array of sinks");
        outputs = &value;
      } else {
        Json::fail(p, "unknown key");
      }
    }
  }
  if (outputs != nullptr) {
    if (!outputs->is_array()) Json::fail(outputsPath, "expected array of sinks");
    for (std::size_t i = 0; i < outputs->size(); ++i)
      plan.sinks.push_back(parse_output((*outputs)[i], json_child(outputsPath, i), defaults));
  }

  if (flags.logFile) {
    SinkSpec s;
    s.type = SinkSpec::Type::file;
    s.where = flags.where("--log-file");
    s.render = defaults;
    s.file.path = *flags.logFile;
    plan.sinks.push_back(std::move(s));
  }
  for (const auto& p : flags.plugins) {
    SinkSpec s;
    s.type = SinkSpec::Type::plugin;
    s.where = flags.where("--plugin");
    s.render = defaults;
    s.pluginPath = p;
    plan.sinks.push_back(std::move(s));
  }
  if (flags.otlpEndpoint) {
    SinkSpec s;
    s.type = SinkSpec::Type::otlp;
    s.where = "--otlp-endpoint";
    s.render = defaults;
    s.otlp.endpoint = *flags.otlpEndpoint;
    plan.sinks.push_back(std::move(s));
  }
  // Plugins and trace export alone do not replace the event log: stdout
  // stays unless a line sink was asked for.
  const bool anyLineSink = std::any_of(plan.sinks.begin(), plan.sinks.end(), [](const SinkSpec& s) {
    return s.type != SinkSpec::Type::plugin && s.type != SinkSpec::Type::otlp;
  });
  if (!anyLineSink && outputs == nullptr) {
    SinkSpec s;
    s.where = "default";
    s.render = defaults;
    plan.sinks.insert(plan.sinks.begin(), std::move(s));
  }
  if (flags.admin) {
    const auto ep = proxy::Endpoint::parse(*flags.admin);
    if (!ep)
      throw SinkConfigError(flags.where("--admin") + ": expected HOST:PORT, got '" + *flags.admin +
                            "'");
    plan.admin = sinks::AdminOptions{ep->host, ep->port};
  }
  return plan;
}

std::vector<std::string> SinkPlan::describe() const {
  std::vector<std::string> out;
  out.push_back("sinks: queue " + std::to_string(queueSize) + " events, drop warnings every " +
                std::to_string(dropWarningInterval.count()) + " ms");
  for (const auto& s : sinks) {
    std::string l = "  sink " + std::string(type_name(s.type));
    switch (s.type) {
      case SinkSpec::Type::file:
        l += " " + s.file.path;
        if (s.file.rotateBytes != 0)
          l += " (rotate at " + std::to_string(s.file.rotateBytes) + " bytes, keep " +
               std::to_string(s.file.keepFiles) + ")";
        break;
      case SinkSpec::Type::tcp:
      case SinkSpec::Type::udp:
        l += " " + s.net.host + ":" + std::to_string(s.net.port);
        break;
      case SinkSpec::Type::plugin:
        l += " " + s.pluginPath + " config " + s.pluginConfig;
        break;
      case SinkSpec::Type::otlp:
        l += " " + s.otlp.endpoint + "/v1/traces, service " + s.otlp.serviceName;
        if (s.otlp.gzip) l += ", gzip";
        if (s.otlp.queryText) l += ", query text";
        if (s.otlp.includeHellos) l += ", hellos";
        break;
      default:
        break;
    }
    l += ", format " + std::string(sinks::to_string(s.render.format));
    l += ", maxDocumentLength " + std::to_string(s.render.maxDocumentLength);
    if (s.render.lines != sinks::Lines::events)
      l += ", lines " + std::string(sinks::to_string(s.render.lines));
    if (s.render.documents != sinks::Documents::object)
      l += ", documents " + std::string(sinks::to_string(s.render.documents));
    if (s.render.extendedJson != sinks::ExtendedJson::relaxed)
      l += ", extendedJson " + std::string(sinks::to_string(s.render.extendedJson));
    if (s.render.redaction != sinks::Redaction::none)
      l += ", redaction " + std::string(sinks::to_string(s.render.redaction));
    const auto& f = s.filter;
    if (!f.includeEvents.empty()) l += ", events " + join(f.includeEvents);
    if (!f.excludeEvents.empty()) l += ", not events " + join(f.excludeEvents);
    if (!f.includeCommands.empty()) l += ", commands " + join(f.includeCommands);
    if (!f.excludeCommands.empty()) l += ", not commands " + join(f.excludeCommands);
    if (!f.includeDatabases.empty()) l += ", databases " + join(f.includeDatabases);
    if (!f.excludeDatabases.empty()) l += ", not databases " + join(f.excludeDatabases);
    if (f.minDurationMicros > 0)
      l += ", slower than " + std::to_string(f.minDurationMicros) + " us";
    if (f.failedOnly) l += ", failed only";
    if (f.sampleRate < 1.0) l += ", sample " + std::to_string(f.sampleRate);
    if (!f.keepHellos) l += ", no hellos";
    if (!f.connectionEvents) l += ", no connection events";
    l += " (" + s.where + ")";
    out.push_back(l);
  }
  if (admin)
    out.push_back("  admin endpoint " + proxy::Endpoint{admin->host, admin->port}.to_string() +
                  ": /metrics /healthz /stats /stats/commands");
  return out;
}

SinkRuntime::SinkRuntime(const SinkPlan& plan, monitor::Stats& stats, sinks::HealthCheck health,
                         std::function<void(std::string_view)> diagnostics)
    : stats_(stats), adminOptions_(plan.admin) {
  sinks::DispatcherOptions o;
  o.queueSize = plan.queueSize;
  o.dropWarningInterval = plan.dropWarningInterval;
  o.diagnostics = std::move(diagnostics);
  dispatcher_ = std::make_unique<sinks::Dispatcher>(stats, std::move(o));
  for (const auto& s : plan.sinks) {
    try {
      std::shared_ptr<sinks::Sink> sink;
      switch (s.type) {
        case SinkSpec::Type::stdoutSink:
          sink = sinks::make_stdout_sink(s.render, s.filter);
          break;
        case SinkSpec::Type::stderrSink:
          sink = sinks::make_stderr_sink(s.render, s.filter);
          break;
        case SinkSpec::Type::file:
          sink = std::make_shared<sinks::FileSink>(s.file, s.render, s.filter);
          break;
        case SinkSpec::Type::tcp:
          sink = std::make_shared<sinks::TcpSink>(s.net, s.render, s.filter);
          break;
        case SinkSpec::Type::udp:
          sink = std::make_shared<sinks::UdpSink>(s.net, s.render, s.filter);
          break;
        case SinkSpec::Type::otlp: {
          sinks::OtlpOptions otlp = s.otlp;
          if (otlp.serviceVersion.empty()) otlp.serviceVersion = plan.version;
          sink = std::make_shared<sinks::OtlpSink>(std::move(otlp), s.render, s.filter);
          break;
        }
        case SinkSpec::Type::plugin:
          sink = sinks::load_sink_plugin(s.pluginPath, s.pluginConfig);
          // A plugin picks its own filter and format; the config overrides
          // them only where it says so.
          if (s.filterSet) sink->set_filter(s.filter);
          if (s.renderSet) sink->set_render_options(s.render);
          break;
      }
      dispatcher_->add(std::move(sink));
    } catch (const sinks::PluginError& e) {
      throw std::runtime_error(std::string(e.what()) + " (" + s.where + ")");
    } catch (const std::exception& e) {
      throw std::runtime_error("sink " + s.where + " (" + type_name(s.type) + "): " + e.what());
    }
  }
  if (adminOptions_) {
    metrics_ = std::make_shared<sinks::MetricsSink>(plan.metrics);
    dispatcher_->add(metrics_);
    commandStats_ = std::make_shared<sinks::CommandStatsSink>(plan.commandStats);
    dispatcher_->add(commandStats_);
    admin_ = std::make_unique<sinks::AdminServer>(*adminOptions_, stats_, dispatcher_.get(),
                                                  metrics_, std::move(health));
    admin_->set_command_stats(commandStats_);
    admin_->set_version(plan.version);
  }
}

SinkRuntime::~SinkRuntime() {
  stop();
}

std::string SinkRuntime::start() {
  dispatcher_->start();
  if (!admin_) return {};
  const std::uint16_t port = admin_->start();
  return proxy::Endpoint{adminOptions_->host, port}.to_string();
}

void SinkRuntime::stop(std::optional<std::chrono::steady_clock::time_point> flushDeadline) {
  if (dispatcher_) {
    if (flushDeadline)
      dispatcher_->stop(*flushDeadline);
    else
      dispatcher_->stop();
  }
  if (admin_) admin_->stop();
}

}  // namespace varanus::app
