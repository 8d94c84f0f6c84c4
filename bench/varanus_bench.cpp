// varanus-bench — what varanus costs, next to a relay that does not look at
// the bytes (haproxy, mode tcp) and next to no proxy at all.
//
// One run starts the stub upstream, haproxy and varanus in each of its
// configurations, then for every workload runs every target in turn,
// several rounds, the order rotated each round (A B C D E, B C D E A, ...),
// and reports medians:
//
//   (a) one connection, sequential ping: latency p50/p99/p99.9, added over direct
//   (b) 16 and 64 connections, find/insert alternating: ops/s, proxy CPU µs per command
//   (c) 1 MB document inserts: MB/s           (d) 10,000 docs via find + getMore: MB/s
//   (e) 10,000 idle connections: proxy RSS per connection
//   (f) connection churn (connect, isMaster, ping, close): connections/s
//   plus, once: one ~48 MB insert message: the proxy's peak RSS growth, and
//   whether the file sink dropped events at the throughput of (b).
//
// The clients are the project's wire builders over raw sockets, not a
// driver (see bench_client.hpp). Every proxy gets one I/O thread (haproxy
// nbthread 1, varanus --io-threads 1), the stub one thread, the load one
// client thread: the machine has two cores and they are shared.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_client.hpp"
#include "bench_mongoc.hpp"
#include "bench_proc.hpp"
#include "varanus/proxy/tls.hpp"

#ifndef VARANUS_BENCH_DEFAULT_VARANUS
#define VARANUS_BENCH_DEFAULT_VARANUS ""
#endif
#ifndef VARANUS_BENCH_DEFAULT_STUB
#define VARANUS_BENCH_DEFAULT_STUB ""
#endif
#ifndef VARANUS_BENCH_MAKE_CERTS
#define VARANUS_BENCH_MAKE_CERTS "tests/support/make_certs.sh"
#endif

namespace vb = varanus::bench;

namespace {
constexpr double kPingSlice = 0.05;  // (a): seconds each target pings before the next one's turn
constexpr double kThroughputSlice = 0.4;  // (b)-(d), (f): seconds of a target's turn
}  // namespace
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------- options

struct Plan {
  std::string mode = "full";  // full | quick | smoke
  int rounds = 5;
  double pingSeconds = 3;
  std::size_t pingCount = 30000;
  double mixSeconds = 2.5;
  double bigSeconds = 1.5;
  double readSeconds = 1.5;
  double churnSeconds = 2;
  int idleConns = 10000;
  int idleRounds = 0;  // 0: every round
  int churnConcurrency = 8;
  std::size_t hugeBytes = 48'000'000 - 1024;
};

struct Options {
  Plan plan;
  std::string jsonPath;
  std::string varanus = VARANUS_BENCH_DEFAULT_VARANUS;
  std::string stub = VARANUS_BENCH_DEFAULT_STUB;
  std::string haproxy = "/usr/sbin/haproxy";
  std::optional<std::string> nosinkArgs, fileArgs, promArgs;
  bool keepTmp = false;
  std::string workloads = "g,a,b16,b64,c,d,f,ma,mb,e";  // --workloads
  bool workloadsGiven = false;
  /// --tls: TLS on both legs of every target (issue 20); certificates made
  /// at run time by make_certs.sh.
  bool tls = false;
  std::string makeCerts = VARANUS_BENCH_MAKE_CERTS;
  std::string only;          // --targets: comma-separated keys; empty = all
  bool noHaproxyOk = false;  // smoke: exit 77 (skip) when haproxy is missing
  std::string commandLine;
};

const char* kUsage = R"(usage: varanus-bench [--quick | --smoke] [options]

Compares direct / haproxy (mode tcp) / varanus (no sinks; JSON-lines file
sink; file sink + Prometheus) on workloads (a)-(f), interleaved rounds,
medians; prints a table and the issue's targets with PASS/FAIL.

  --quick               ~1 minute: 2 rounds, short windows, 10,000 idle connections once
  --smoke               a few seconds: checks every configuration starts and gives
                        non-zero figures (exit 1 if not; 77 if haproxy is missing)
  --rounds N            rounds (default 5)
  --idle N              idle connections for (e) (default 10000)
  --json PATH           also write the results as JSON
  --varanus PATH        the varanus binary (default: the one built beside this)
  --stub PATH           the varanus-stub binary (default: the one built beside this)
  --haproxy PATH        default /usr/sbin/haproxy
  --nosink-args 'ARGS'  varanus flags for "no sinks" (default: detected from --help)
  --file-args 'ARGS'    varanus flags for the file sink; {log} is the file path
  --prom-args 'ARGS'    varanus flags for file sink + Prometheus; {log} as above
  --keep-tmp            keep the temporary directory (configs, logs)
  --workloads LIST      only these, of g,a,b16,b64,c,d,f,ma,mb,e (g: the 48 MB message;
                        ma, mb: libmongoc ping latency and find/insert mix)
  --targets LIST        only these, of direct,haproxy,nosink,file,prom (for profiling:
                        the proxies' pids are printed at start)
  --tls                 TLS on both legs (issue 20's targets): the stub serves TLS,
                        haproxy 'bind ... ssl crt' + 'server ... ssl ca-file verify
                        required', varanus --tls-cert/--tls-key --upstream-tls
                        --upstream-tls-ca, the client speaks TLS (a full handshake per
                        connection). Targets direct, haproxy, nosink, file; workloads
                        a,b16,b64,f by default (c, d allowed; e, g, ma, mb are not)
  --make-certs PATH     the certificate script for --tls (default: the source tree's
                        tests/support/make_certs.sh)
)";

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::optional<Options> parse(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) {
    if (i > 0) o.commandLine.push_back(' ');
    o.commandLine.append(argv[i]);
  }
  auto value = [&](int& i) -> std::optional<std::string> {
    if (i + 1 >= argc) return std::nullopt;
    return std::string(argv[++i]);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::optional<std::string> v;
    if (a == "--quick") {
      o.plan.mode = "quick";
    } else if (a == "--smoke") {
      o.plan.mode = "smoke";
    } else if (a == "--keep-tmp") {
      o.keepTmp = true;
    } else if (a == "--tls") {
      o.tls = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if ((a == "--rounds" || a == "--idle" || a == "--json" || a == "--varanus" ||
                a == "--stub" || a == "--haproxy" || a == "--nosink-args" || a == "--file-args" ||
                a == "--prom-args" || a == "--workloads" || a == "--targets" ||
                a == "--make-certs") &&
               (v = value(i))) {
      if (a == "--rounds") o.plan.rounds = std::max(1, std::atoi(v->c_str()));
      if (a == "--idle") o.plan.idleConns = std::max(10, std::atoi(v->c_str()));
      if (a == "--json") o.jsonPath = *v;
      if (a == "--varanus") o.varanus = *v;
      if (a == "--stub") o.stub = *v;
      if (a == "--haproxy") o.haproxy = *v;
      if (a == "--nosink-args") o.nosinkArgs = *v;
      if (a == "--file-args") o.fileArgs = *v;
      if (a == "--prom-args") o.promArgs = *v;
      if (a == "--workloads") o.workloads = *v, o.workloadsGiven = true;
      if (a == "--make-certs") o.makeCerts = *v;
      if (a == "--targets") o.only = *v;
    } else {
      std::fprintf(stderr, "varanus-bench: bad argument '%s'\n%s", a.c_str(), kUsage);
      return std::nullopt;
    }
  }
  return o;
}

/// The workloads a --tls run can measure: the client's TLS is in the
/// blocking and the mix/churn paths, not in (e)'s idle opener, the 48 MB
/// message or libmongoc's clients.
constexpr const char* kTlsWorkloads = "a,b16,b64,c,d,f";

/// --tls: workloads a,b16,b64,f unless --workloads says otherwise; those a
/// TLS run cannot measure are refused. False (with a message) on refusal.
bool apply_tls_workloads(Options& o) {
  if (!o.tls) return true;
  if (!o.workloadsGiven) {
    o.workloads = "a,b16,b64,f";
    return true;
  }
  std::istringstream in(o.workloads);
  std::string w;
  while (std::getline(in, w, ',')) {
    if (("," + std::string(kTlsWorkloads) + ",").find("," + w + ",") == std::string::npos) {
      std::fprintf(stderr, "varanus-bench: --tls measures only %s, not '%s'\n", kTlsWorkloads,
                   w.c_str());
      return false;
    }
  }
  return true;
}

void apply_mode(Options& o, bool roundsGiven, bool idleGiven) {
  Plan& p = o.plan;
  if (p.mode == "quick") {
    if (!roundsGiven) p.rounds = 2;
    p.idleRounds = 1;  // opening 10,000 connections per proxy takes a while
    p.pingSeconds = 1.0;
    p.pingCount = 10000;
    p.mixSeconds = 0.8;
    p.bigSeconds = 0.5;
    p.readSeconds = 0.5;
    p.churnSeconds = 0.5;
  } else if (p.mode == "smoke") {
    if (!roundsGiven) p.rounds = 1;
    p.pingSeconds = 0.2;
    p.pingCount = 500;
    p.mixSeconds = 0.2;
    p.bigSeconds = 0.1;
    p.readSeconds = 0.1;
    p.churnSeconds = 0.2;
    if (!idleGiven) p.idleConns = 200;
    p.hugeBytes = 8'000'000;
  }
}

// ---------------------------------------------------------------- targets

struct Target {
  std::string key;    // direct, haproxy, nosink, file, prom
  std::string label;  // column heading
  std::string how;    // how it was started
  std::uint16_t port = 0;
  vb::Proc proc;
  std::string logPath;  // file sink, "" if none
  std::uint16_t adminPort = 0;
  bool ok = true;
  bool unavailable = false;  // the varanus under test has no flag for this configuration
  std::string error;
  long baseRssKib = -1;
  std::function<bool(Target&)> launch;  // (re)starts the process (proxies)
  pid_t pid() const { return proc.pid; }
};

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

void say(const char* fmt, const std::string& a = {}, const std::string& b = {}) {
  std::fprintf(stderr, fmt, a.c_str(), b.c_str());
  std::fflush(stderr);
}

/// Raises RLIMIT_NOFILE (children inherit it) so that (e) fits: the proxy
/// holds two descriptors per idle connection.
rlim_t raise_nofile(rlim_t want) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  rlimit n = r;
  if (n.rlim_max < want) n.rlim_max = want;  // works as root (CAP_SYS_RESOURCE)
  n.rlim_cur = n.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &n) != 0) {
    n = r;
    n.rlim_cur = n.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &n);
  }
  ::getrlimit(RLIMIT_NOFILE, &r);
  return r.rlim_cur;
}

std::string sibling_binary(const std::string& configured, const std::string& rel) {
  if (!configured.empty()) return configured;
  // The bench binary lives in BUILD/bench; the others in BUILD/src/...
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return rel;
  return (self.parent_path().parent_path() / rel).string();
}

struct VaranusFlags {
  std::vector<std::string> nosink, file, prom;
  bool nosinkReal = false;  // a real "no sinks" switch exists
  bool fileReal = false;    // a real file sink flag exists
  bool promReal = false;
  std::string note;
};

/// Reads `varanus --help` to find how to ask for each configuration; the
/// --*-args options override what is found.
VaranusFlags detect_flags(const Options& o, const std::string& dir) {
  VaranusFlags f;
  std::string help = vb::run_capture({o.varanus, "--help"}, std::chrono::seconds(5)).value_or("");
  auto has = [&](const char* flag) { return help.find(flag) != std::string::npos; };
  if (has("--no-stdout")) {
    f.nosink = {"--no-stdout"};
    f.nosinkReal = true;
  } else if (has("--no-sinks")) {
    f.nosink = {"--no-sinks"};
    f.nosinkReal = true;
  } else if (has("--check-config")) {
    // No flag, but a config whose sink list is empty: {"sinks": {"outputs": []}}.
    const std::string cfg = dir + "/no-sinks.json";
    std::ofstream(cfg) << "{\"sinks\": {\"outputs\": []}}\n";
    const std::string out =
        vb::run_capture({o.varanus, "--config", cfg, "--check-config"}, std::chrono::seconds(5))
            .value_or("error");
    if (out.find("error") == std::string::npos && out.find("not supported") == std::string::npos &&
        out.find("sinks") != std::string::npos) {
      f.nosink = {"--config", cfg};
      f.nosinkReal = true;
    }
  }
  if (has("--log-file")) {
    // --log-file replaces stdout: nothing else is needed.
    f.file.clear();
    f.file.push_back("--log-file");
    f.file.push_back("{log}");
    f.fileReal = true;
  }
  if (f.fileReal && (has("--admin") || has("--metrics"))) {
    f.prom = f.file;
    f.prom.push_back(has("--admin") ? "--admin" : "--metrics");
    f.prom.push_back("127.0.0.1:0");
    f.promReal = true;
  }
  if (o.nosinkArgs) f.nosink = split_words(*o.nosinkArgs), f.nosinkReal = true;
  if (o.fileArgs) f.file = split_words(*o.fileArgs), f.fileReal = true;
  if (o.promArgs) f.prom = split_words(*o.promArgs), f.promReal = true;
  return f;
}

bool start_varanus(const Options& o, Target& t, const std::string& dir, std::uint16_t stubPort,
                   const std::vector<std::string>& extra, bool stdoutIsLog) {
  std::vector<std::string> argv = {o.varanus,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--upstream",
                                   "127.0.0.1:" + std::to_string(stubPort),
                                   "--io-threads",
                                   "1"};
  for (auto a : extra) {
    if (auto at = a.find("{log}"); at != std::string::npos) a.replace(at, 5, t.logPath);
    argv.push_back(a);
  }
  t.how = "varanus";
  for (std::size_t i = 1; i < argv.size(); ++i) t.how += " " + argv[i];
  const std::string out = stdoutIsLog ? t.logPath : std::string("/dev/null");
  if (stdoutIsLog) t.how += " > " + t.logPath;
  t.proc = vb::spawn(t.key, argv, out, dir + "/" + t.key + ".stderr");
  auto port = vb::wait_for_line(
      t.proc, t.proc.errPath,
      [](const std::string& l) -> std::optional<std::string> {
        auto p = vb::port_in(l, "listening on");
        return p ? std::optional<std::string>(std::to_string(*p)) : std::nullopt;
      },
      std::chrono::seconds(10));
  if (!port) {
    t.ok = false;
    t.error = "did not start: " + vb::read_file(t.proc.errPath).substr(0, 300);
    return false;
  }
  t.port = static_cast<std::uint16_t>(std::stoi(*port));
  const bool wantsAdmin = std::find(extra.begin(), extra.end(), "--admin") != extra.end() ||
                          std::find(extra.begin(), extra.end(), "--metrics") != extra.end();
  if (wantsAdmin) {
    auto admin = vb::wait_for_line(
        t.proc, t.proc.errPath,
        [](const std::string& l) -> std::optional<std::string> {
          if (l.find("listening on") != std::string::npos) return std::nullopt;
          if (l.find("admin") == std::string::npos && l.find("metrics") == std::string::npos) {
            return std::nullopt;
          }
          auto p = vb::port_in(l);
          return p ? std::optional<std::string>(std::to_string(*p)) : std::nullopt;
        },
        std::chrono::seconds(5));
    if (admin) {
      t.adminPort = static_cast<std::uint16_t>(std::stoi(*admin));
      t.how += " (admin on port " + *admin + ")";
    }
  }
  return true;
}

/// The certificates of a --tls run (make_certs.sh's names).
struct TlsFiles {
  std::string dir;  // empty: plaintext run
  std::string cert() const { return dir + "/server.pem"; }
  std::string key() const { return dir + "/server.key"; }
  std::string bundle() const { return dir + "/server-bundle.pem"; }  // haproxy's crt
  std::string ca() const { return dir + "/ca.pem"; }
  bool on() const { return !dir.empty(); }
};

bool start_haproxy(const Options& o, Target& t, const std::string& dir, std::uint16_t stubPort,
                   int maxconn, const TlsFiles& tls) {
  const std::string cfg = dir + "/haproxy.cfg";
  for (int attempt = 0; attempt < 5; ++attempt) {
    t.port = vb::free_port();
    std::ofstream f(cfg);
    f << "# generated by varanus-bench: a relay that copies without looking\n"
         "global\n"
         "    nbthread 1\n"
         "    maxconn "
      << maxconn
      << "\n"
         "defaults\n"
         "    mode tcp\n"
         "    timeout connect 5s\n"
         "    timeout client 600s\n"
         "    timeout server 600s\n"
         "frontend bench\n"
         "    bind 127.0.0.1:"
      << t.port;
    // TLS: terminated here, a new TLS connection to the stub verified with
    // the test CA. no-ssl-reuse: a full handshake on the upstream leg too,
    // as varanus does (haproxy would otherwise resume its last session).
    if (tls.on()) f << " ssl crt " << tls.bundle();
    f << "\n    maxconn " << maxconn
      << "\n"
         "    default_backend stub\n"
         "backend stub\n"
         "    server stub 127.0.0.1:"
      << stubPort;
    if (tls.on()) f << " ssl ca-file " << tls.ca() << " verify required no-ssl-reuse";
    f << "\n";
    f.close();
    t.proc =
        vb::spawn("haproxy", {o.haproxy, "-db", "-f", cfg}, "/dev/null", dir + "/haproxy.stderr");
    t.how =
        "haproxy -db -f " + cfg + " (nbthread 1, mode tcp" + (tls.on() ? ", TLS both legs)" : ")");
    if (vb::wait_listening(t.port, std::chrono::seconds(5)) && vb::alive(t.proc)) return true;
    vb::stop(t.proc);
  }
  t.ok = false;
  t.error = "haproxy did not start: " + vb::read_file(dir + "/haproxy.stderr").substr(0, 300);
  return false;
}

// ---------------------------------------------------------------- results

/// samples[metric][target] = one value per round.
using Samples = std::map<std::string, std::map<std::string, std::vector<double>>>;

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::nan("");
  const double rank = p * static_cast<double>(sorted.size() - 1);
  return sorted[static_cast<std::size_t>(std::llround(rank))];
}

struct Metric {
  std::string key;
  std::string label;
  int decimals;
  bool higherBetter;
};

const std::vector<Metric>& metrics() {
  static const std::vector<Metric> m = {
      {"a_p50_us", "(a) ping p50 µs", 1, false},
      {"a_p99_us", "(a) ping p99 µs", 1, false},
      {"a_p999_us", "(a) ping p99.9 µs", 1, false},
      {"a_added_p50_us", "(a) added p50 µs vs direct", 1, false},
      {"a_added_p99_us", "(a) added p99 µs vs direct", 1, false},
      {"a_cpu_us_per_cmd", "(a) proxy CPU µs/ping", 1, false},
      {"b16_ops_s", "(b) 16 conns ops/s", 0, true},
      {"b16_cpu_us_per_cmd", "(b) 16 conns CPU µs/cmd", 1, false},
      {"b16_io_cpu_us_per_cmd", "  of which I/O thread µs/cmd", 1, false},
      {"b64_ops_s", "(b) 64 conns ops/s", 0, true},
      {"b64_cpu_us_per_cmd", "(b) 64 conns CPU µs/cmd", 1, false},
      {"b64_io_cpu_us_per_cmd", "  of which I/O thread µs/cmd", 1, false},
      {"c_mb_s", "(c) 1 MB inserts MB/s", 0, true},
      {"d_mb_s", "(d) 10k docs getMore MB/s", 0, true},
      {"e_kib_per_conn", "(e) idle RSS KiB/conn", 1, false},
      {"f_conn_s", "(f) churn conn/s", 0, true},
      {"f_cpu_us_per_conn", "(f) churn CPU µs/conn", 1, false},
      {"ma_p50_us", "(a') libmongoc ping p50 µs", 1, false},
      {"ma_added_p50_us", "(a') libmongoc added p50 µs", 1, false},
      {"mb_ops_s", "(b') libmongoc 2 thr find/ins ops/s", 0, true},
      {"g_huge_growth_mib", "48 MB msg: peak RSS growth MiB", 1, false},
      {"b64_events_dropped", "(b) 64: events dropped", 0, false},
  };
  return m;
}

std::string fmt(double v, int decimals) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

struct Check {
  std::string name;
  std::string detail;  // measured values
  double ratio = std::nan("");
  std::string rule;
  bool pass = false;
  bool known = false;  // false: could not be measured
};

// ---------------------------------------------------------------- running

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}
  int run();

 private:
  void run_workload(const std::string& code, const std::string& name,
                    const std::function<void(Target&, int)>& fn, bool proxiesOnly = false);
  /// As run_workload, but each round is cut in `slices` short windows and the
  /// targets take turns slice by slice (rotated): `fn` runs one slice, the
  /// slices of a round are summed, `done` records the round's total.
  void run_sliced(const std::string& code, const std::string& name, int slices,
                  const std::function<vb::Window(Target&, bool lastSlice)>& fn,
                  const std::function<void(Target&, const vb::Window&)>& done);
  bool usable(Target& t);
  bool wanted(const std::string& code) const {
    return ("," + o_.workloads + ",").find("," + code + ",") != std::string::npos;
  }
  bool selected(const Target& t) const {
    return o_.only.empty() || ("," + o_.only + ",").find("," + t.key + ",") != std::string::npos;
  }
  void record(const std::string& metric, const Target& t, double v) {
    samples_[metric][t.key].push_back(v);
  }
  double med(const std::string& metric, const std::string& target) const {
    auto m = samples_.find(metric);
    if (m == samples_.end()) return std::nan("");
    auto t = m->second.find(target);
    return t == m->second.end() ? std::nan("") : median(t->second);
  }
  /// The median over rounds of (target's sample / haproxy's sample in the
  /// same round), or of their difference when `difference`. Both were
  /// measured minutes apart at most, so the machine's drift (large on a
  /// shared VM) cancels: steadier than the ratio of the two medians.
  double vs_haproxy(const std::string& metric, const std::string& target,
                    const std::string& haproxyMetric, bool difference = false) const {
    auto m = samples_.find(metric);
    auto hm = samples_.find(haproxyMetric);
    if (m == samples_.end() || hm == samples_.end()) return std::nan("");
    auto t = m->second.find(target);
    auto h = hm->second.find("haproxy");
    if (t == m->second.end() || h == hm->second.end()) return std::nan("");
    std::vector<double> per;
    for (std::size_t r = 0; r < std::min(t->second.size(), h->second.size()); ++r) {
      if (difference) {
        per.push_back(t->second[r] - h->second[r]);
      } else if (h->second[r] > 0) {
        per.push_back(t->second[r] / h->second[r]);
      }
    }
    return per.empty() ? std::nan("") : median(per);
  }
  void workload_error(Target& t, const std::string& what, const vb::Window& w);
  void count_events(Target& t, const vb::Window& w, int conns);
  void truncate_log(Target& t);
  void huge_message(Target& t);
  std::vector<Check> checks() const;
  void print_table(const std::vector<Check>& cs) const;
  json to_json(const std::vector<Check>& cs) const;
  bool sane() const;

  Options o_;
  std::string dir_;
  vb::Proc stub_;
  std::uint16_t stubPort_ = 0;
  std::vector<Target> targets_;
  Samples samples_;
  std::vector<std::string> errors_;
  double loadStart_ = -1, loadEnd_ = -1;
  std::string started_;
  int idleUsed_ = 0;
  std::size_t hugeSent_ = 0;
  std::string limitNote_;
  double wallSeconds_ = 0, foreignCpu_ = -1, stealCpu_ = -1;
  VaranusFlags flags_;
  TlsFiles tls_;  // --tls: the certificates; empty dir otherwise
};

void Bench::workload_error(Target& t, const std::string& what, const vb::Window& w) {
  if (w.errors == 0) return;
  errors_.push_back(t.key + ": " + what + ": " + std::to_string(w.errors) +
                    " error(s), first: " + w.firstError);
  say("  ! %s\n", errors_.back());
}

void Bench::truncate_log(Target& t) {
  if (!t.logPath.empty()) ::truncate(t.logPath.c_str(), 0);
}

/// After (b) at 64 connections: every command should have its started and
/// succeeded lines in the file. Lines are counted once the file stops
/// growing; the drop counter is read from /metrics when there is one.
void Bench::count_events(Target& t, const vb::Window& w, int conns) {
  if (t.logPath.empty()) return;
  long long last = -1;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    struct stat st {};
    ::stat(t.logPath.c_str(), &st);
    if (st.st_size == last || Clock::now() >= deadline) break;
    last = st.st_size;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  // The file was emptied before the run: it holds the 64 handshakes and
  // the measured commands, each with a started and a succeeded line.
  const std::string text = vb::read_file(t.logPath);
  const auto count = [&text](std::string_view needle) {
    std::uint64_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
  };
  const std::uint64_t started = count("\"commandStarted\"");
  const std::uint64_t finished = count("\"commandSucceeded\"") + count("\"commandFailed\"");
  const std::uint64_t expected = w.completed + static_cast<std::uint64_t>(conns);
  const std::uint64_t seen = std::min(started, finished);
  double dropped = seen >= expected ? 0 : static_cast<double>(expected - seen);
  if (t.adminPort != 0) {
    if (auto body = vb::http_get(t.adminPort, "/metrics", std::chrono::seconds(2))) {
      std::istringstream in(*body);
      std::string line;
      while (std::getline(in, line)) {
        if (line.rfind("varanus_events_dropped_total", 0) == 0) {
          static std::map<std::string, double> before;  // the counter is cumulative
          const double total = std::atof(line.substr(line.rfind(' ') + 1).c_str());
          dropped = std::max(dropped, total - before[t.key]);
          before[t.key] = total;
        }
      }
    }
  }
  record("b64_events_dropped", t, dropped);
}

void Bench::huge_message(Target& t) {
  if (t.pid() <= 0) return;
  const long before = vb::rss_kib(t.pid());
  const long hwmBefore = vb::hwm_kib(t.pid());
  std::string err;
  const std::size_t sent = vb::one_huge_insert(t.port, o_.plan.hugeBytes, &err);
  const long hwm = vb::hwm_kib(t.pid());
  if (sent == 0) {
    errors_.push_back(t.key + ": 48 MB message: " + err);
    say("  ! %s\n", errors_.back());
    return;
  }
  // Growth of the peak over the resident size before the message (the
  // process is fresh: the peak before was about the size at start).
  const long base = std::max(before, hwmBefore);
  record("g_huge_growth_mib", t, static_cast<double>(std::max(0L, hwm - base)) / 1024.0);
  hugeSent_ = sent;
}

void Bench::run_workload(const std::string& code, const std::string& name,
                         const std::function<void(Target&, int)>& fn, bool proxiesOnly) {
  if (!wanted(code)) return;
  say("%s\n", name);
  const auto n = targets_.size();
  const int rounds = code == "e" && o_.plan.idleRounds > 0
                         ? std::min(o_.plan.idleRounds, o_.plan.rounds)
                         : o_.plan.rounds;
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < n; ++i) {
      Target& t = targets_[(i + static_cast<std::size_t>(r)) % n];
      if ((proxiesOnly && t.pid() <= 0) || !usable(t)) continue;
      fn(t, r);
    }
  }
}

bool Bench::usable(Target& t) {
  if (!t.ok || !selected(t)) return false;
  if (t.pid() > 0 && !vb::alive(t.proc)) {
    t.ok = false;
    t.error =
        "exited during the benchmark; stderr: " + vb::read_file(t.proc.errPath).substr(0, 300);
    errors_.push_back(t.key + ": " + t.error);
    say("  ! %s\n", errors_.back());
    return false;
  }
  return true;
}

void Bench::run_sliced(const std::string& code, const std::string& name, int slices,
                       const std::function<vb::Window(Target&, bool)>& fn,
                       const std::function<void(Target&, const vb::Window&)>& done) {
  if (!wanted(code)) return;
  say("%s\n", name);
  const auto n = targets_.size();
  slices = std::max(1, slices);
  for (int r = 0; r < o_.plan.rounds; ++r) {
    std::vector<vb::Window> total(n);
    std::vector<bool> ran(n, false);
    for (int sl = 0; sl < slices; ++sl) {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (k + static_cast<std::size_t>(sl + r)) % n;
        Target& t = targets_[i];
        if (!usable(t)) continue;
        vb::add(total[i], fn(t, sl == slices - 1));
        ran[i] = true;
      }
    }
    for (std::size_t i = 0; i < n; ++i)
      if (ran[i] && targets_[i].ok) done(targets_[i], total[i]);
  }
}

int Bench::run() {
  Plan& p = o_.plan;
  started_ = now_utc();
  loadStart_ = vb::load_average();
  const double busy0 = vb::machine_busy_seconds(), own0 = vb::own_cpu_seconds();
  const double steal0 = vb::steal_seconds();
  const auto wall0 = Clock::now();

  // The proxies hold two descriptors per idle connection, the client one.
  const auto want = static_cast<rlim_t>(2 * p.idleConns + 1024);
  const rlim_t have = raise_nofile(want);
  idleUsed_ = p.idleConns;
  if (have < want) {
    // Each proxy holds two descriptors per connection (client + upstream).
    idleUsed_ = std::max(10, static_cast<int>((have - 1024) / 2));
    limitNote_ = "RLIMIT_NOFILE hard limit is " + std::to_string(have) +
                 " (cannot raise it): (e) uses " + std::to_string(idleUsed_) +
                 " idle connections, not " + std::to_string(p.idleConns) + ". ";
    say("note: %s\n", limitNote_);
  }

  char tmpl[] = "/tmp/varanus-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    say("varanus-bench: mkdtemp failed\n");
    return 1;
  }
  dir_ = tmpl;

  std::vector<std::string> stubArgv = {o_.stub, "--listen", "127.0.0.1:0", "--threads", "1"};
  if (o_.tls) {
    // The same certificates for every target, made now: the stub's, which
    // haproxy and varanus also present, and the CA everyone verifies with.
    tls_.dir = dir_ + "/certs";
    const auto out =
        vb::run_capture({"/bin/bash", o_.makeCerts, tls_.dir}, std::chrono::seconds(60));
    if (!out || ::access(tls_.ca().c_str(), R_OK) != 0 ||
        ::access(tls_.bundle().c_str(), R_OK) != 0) {
      say("varanus-bench: --tls: %s did not make the certificates: %s\n", o_.makeCerts,
          out.value_or("(could not run or timed out)"));
      return 1;
    }
    try {
      varanus::proxy::TlsClientSettings cs;
      cs.enabled = true;
      cs.caFile = tls_.ca();
      vb::use_tls(varanus::proxy::TlsContext::client(cs));
    } catch (const varanus::proxy::TlsError& e) {
      say("varanus-bench: --tls: the client's TLS context: %s\n", e.what());
      return 1;
    }
    stubArgv.insert(stubArgv.end(), {"--tls-cert", tls_.cert(), "--tls-key", tls_.key()});
  }
  // The stub upstream: one thread, like the proxies.
  stub_ = vb::spawn("stub", stubArgv, dir_ + "/stub.stdout", dir_ + "/stub.stderr");
  auto sp = vb::wait_for_line(
      stub_, stub_.outPath,
      [](const std::string& l) -> std::optional<std::string> {
        auto port = vb::port_in(l);
        return port ? std::optional<std::string>(std::to_string(*port)) : std::nullopt;
      },
      std::chrono::seconds(10));
  if (!sp) {
    say("varanus-bench: the stub did not start: %s\n", vb::read_file(stub_.errPath));
    return 1;
  }
  stubPort_ = static_cast<std::uint16_t>(std::stoi(*sp));
  std::string err;
  if (!vb::seed(stubPort_, &err)) {
    say("varanus-bench: seeding the stub failed: %s\n", err);
    return 1;
  }

  targets_.resize(o_.tls ? 4 : 5);  // --tls: no file+Prometheus column
  targets_[0].key = "direct";
  targets_[0].label = "direct";
  targets_[0].how = "varanus-stub --threads 1 (no proxy)";
  targets_[0].port = stubPort_;
  targets_[1].key = "haproxy";
  targets_[1].label = "haproxy";
  targets_[2].key = "nosink";
  targets_[2].label = "varanus";
  targets_[3].key = "file";
  targets_[3].label = "v+file";
  targets_[3].logPath = dir_ + "/events-file.jsonl";
  if (o_.tls) {
    targets_[0].label = "direct-tls";
    targets_[0].how = "varanus-stub --threads 1 --tls-cert --tls-key (no proxy)";
    targets_[1].label = "haproxy-tls";
    targets_[2].label = "varanus-tls";
    targets_[3].label = "v+file-tls";
  } else {
    targets_[4].key = "prom";
    targets_[4].label = "v+file+prom";
    targets_[4].logPath = dir_ + "/events-prom.jsonl";
  }

  if (::access(o_.haproxy.c_str(), X_OK) != 0) {
    say("varanus-bench: %s not found (scripts/install-deps.sh installs haproxy)\n", o_.haproxy);
    return p.mode == "smoke" ? 77 : 1;
  }
  // haproxy needs 2 descriptors per maxconn and refuses to start when the
  // limit cannot be raised that far: ask only for what (e) needs.
  const int maxconn = idleUsed_ + 200;
  targets_[1].launch = [this, maxconn](Target& t) {
    return start_haproxy(o_, t, dir_, stubPort_, maxconn, tls_);
  };
  targets_[1].launch(targets_[1]);

  flags_ = detect_flags(o_, dir_);
  if (!flags_.nosinkReal) {
    flags_.note +=
        "no-sinks: this varanus has no flag to turn the stdout sink off; its stdout goes to "
        "/dev/null (events are still rendered). ";
  }
  if (!flags_.fileReal) {
    flags_.note +=
        "file sink: no --log-file in this varanus; the stdout JSON-lines sink is redirected to "
        "a file (same buffered line-sink code). ";
  }
  if (tls_.on()) {
    // Both legs: the stub's certificate to the client, the test CA (and the
    // name 127.0.0.1) to verify the stub.
    for (auto* v : {&flags_.nosink, &flags_.file, &flags_.prom}) {
      v->insert(v->end(), {"--tls-cert", tls_.cert(), "--tls-key", tls_.key(), "--upstream-tls",
                           "--upstream-tls-ca", tls_.ca()});
    }
  }
  const auto varanus = [this](std::vector<std::string> extra, bool stdoutIsLog) {
    return [this, extra, stdoutIsLog](Target& t) {
      return start_varanus(o_, t, dir_, stubPort_, extra, stdoutIsLog);
    };
  };
  targets_[2].launch = varanus(flags_.nosink, false);
  targets_[3].launch = varanus(flags_.file, !flags_.fileReal);
  targets_[2].launch(targets_[2]);
  targets_[3].launch(targets_[3]);
  if (o_.tls) {
    // No file+Prometheus column in a TLS run.
  } else if (flags_.promReal) {
    targets_[4].launch = varanus(flags_.prom, false);
    targets_[4].launch(targets_[4]);
    if (targets_[4].ok && targets_[4].adminPort == 0) {
      flags_.note += "prom: no admin address found on stderr; the drop counter is not read. ";
    }
  } else {
    targets_[4].ok = false;
    targets_[4].unavailable = true;
    targets_[4].error = "file sink + Prometheus: not offered by this varanus (no --admin flag)";
  }
  for (auto& t : targets_) {
    if (!t.ok) {
      errors_.push_back(t.key + ": " + t.error);
      say("! %s: %s\n", t.key, t.error);
    } else {
      say("%s: %s\n", t.key + (t.pid() > 0 ? " (pid " + std::to_string(t.pid()) + ")" : ""), t.how);
    }
  }
  if (!targets_[1].ok || !targets_[2].ok) {
    for (auto& t : targets_) vb::stop(t.proc);
    vb::stop(stub_);
    return 1;
  }
  for (auto& t : targets_) {
    if (t.pid() > 0) t.baseRssKib = vb::rss_kib(t.pid());
  }

  const auto secs = [](double s) { return vb::Seconds(s); };

  // Once, on fresh processes: one ~48 MB message.
  say("48 MB message\n");
  for (auto& t : targets_) {
    if (t.ok && t.pid() > 0 && selected(t) && wanted("g")) huge_message(t);
  }

  // (a) sequential ping latency, finely interleaved: in each round every
  // target keeps one connection open and the targets take turns in slices
  // of 50 ms (rotated), so that the machine's drift, which on a shared VM
  // is tens of µs, falls alike on every target and a few µs show through.
  // The percentiles of a round are over all its slices.
  if (wanted("a")) {
    say("(a) ping latency (targets take turns in 50 ms slices)\n");
    const auto n = targets_.size();
    const int slices = std::max(1, static_cast<int>(p.pingSeconds / kPingSlice + 0.5));
    for (int r = 0; r < p.rounds; ++r) {
      std::vector<vb::PingConnection> conns(n);
      std::vector<vb::Window> windows(n);
      std::vector<std::vector<double>> us(n);
      std::vector<double> cpu0(n, -1);
      for (std::size_t i = 0; i < n; ++i) {
        Target& t = targets_[i];
        if (!t.ok || !selected(t)) continue;
        truncate_log(t);
        if (!conns[i].open(t.port, &windows[i])) continue;
        us[i].reserve(p.pingCount);
        cpu0[i] = t.pid() > 0 ? vb::cpu_seconds(t.pid()) : -1;
      }
      for (int sl = 0; sl < slices; ++sl) {
        for (std::size_t k = 0; k < n; ++k) {
          const std::size_t i = (k + static_cast<std::size_t>(sl + r)) % n;
          if (!conns[i].is_open() || us[i].size() >= p.pingCount) continue;
          conns[i].run(vb::Seconds(kPingSlice), p.pingCount - us[i].size(), us[i], &windows[i]);
        }
      }
      for (std::size_t i = 0; i < n; ++i) {
        Target& t = targets_[i];
        if (!t.ok || !selected(t)) continue;
        const double cpu1 = t.pid() > 0 ? vb::cpu_seconds(t.pid()) : -1;
        workload_error(t, "(a)", windows[i]);
        if (us[i].empty()) continue;
        std::sort(us[i].begin(), us[i].end());
        record("a_p50_us", t, percentile(us[i], 0.50));
        record("a_p99_us", t, percentile(us[i], 0.99));
        record("a_p999_us", t, percentile(us[i], 0.999));
        if (cpu0[i] >= 0 && cpu1 >= 0) {
          // Over the whole round: an idle proxy costs (almost) nothing while
          // the others take their turns; the 200 warm-up pings count too.
          record("a_cpu_us_per_cmd", t,
                 (cpu1 - cpu0[i]) * 1e6 / static_cast<double>(us[i].size() + 200));
        }
      }
    }
  }
  {
    auto& s = samples_;
    const auto& d50 = s["a_p50_us"]["direct"];
    const auto& d99 = s["a_p99_us"]["direct"];
    for (auto& t : targets_) {
      if (t.key == "direct") continue;
      const auto& t50 = s["a_p50_us"][t.key];
      const auto& t99 = s["a_p99_us"][t.key];
      for (std::size_t r = 0; r < std::min(d50.size(), t50.size()); ++r) {
        record("a_added_p50_us", t, t50[r] - d50[r]);
      }
      for (std::size_t r = 0; r < std::min(d99.size(), t99.size()); ++r) {
        record("a_added_p99_us", t, t99[r] - d99[r]);
      }
    }
  }

  // (b), (c), (d), (f): the targets take turns in slices of ~0.4 s within
  // each round, so that the machine's drift falls alike on all of them.
  const auto slices_of = [](double seconds) {
    return std::max(1, static_cast<int>(seconds / kThroughputSlice + 0.5));
  };

  // (b) find/insert mix.
  for (int conns : {16, 64}) {
    const std::string k = "b" + std::to_string(conns);
    const int n = slices_of(p.mixSeconds);
    run_sliced(
        k, "(b) " + std::to_string(conns) + " connections find/insert", n,
        [&](Target& t, bool last) {
          truncate_log(t);
          auto w = vb::mix(t.port, conns, secs(p.mixSeconds / n), 50'000'000, t.pid());
          // Events against commands: on one full-rate slice per round.
          if (conns == 64 && last) count_events(t, w, conns);
          vb::drop(stubPort_, "mix");
          return w;
        },
        [&](Target& t, const vb::Window& w) {
          workload_error(t, "(b)", w);
          if (w.seconds > 0 && w.ops > 0) {
            record(k + "_ops_s", t, static_cast<double>(w.ops) / w.seconds);
            if (w.cpuSeconds >= 0) {
              record(k + "_cpu_us_per_cmd", t, w.cpuSeconds * 1e6 / static_cast<double>(w.ops));
            }
            if (w.cpuMainSeconds >= 0 && t.key != "haproxy") {
              record(k + "_io_cpu_us_per_cmd", t,
                     w.cpuMainSeconds * 1e6 / static_cast<double>(w.ops));
            }
          }
        });
  }

  // (c) 1 MB inserts and (d) 10,000 documents read back through getMore:
  // MB/s of the window's payload bytes.
  const auto bandwidth = [&](const std::string& code, const std::string& name, double seconds,
                             const std::function<vb::Window(Target&, vb::Seconds)>& one) {
    const int n = slices_of(seconds);
    run_sliced(
        code, name, n,
        [&](Target& t, bool) {
          truncate_log(t);
          return one(t, secs(seconds / n));
        },
        [&](Target& t, const vb::Window& w) {
          workload_error(t, "(" + code + ")", w);
          if (w.seconds > 0 && w.ops > 0)
            record(code + "_mb_s", t, static_cast<double>(w.bytes) / 1e6 / w.seconds);
        });
  };
  bandwidth("c", "(c) 1 MB inserts", p.bigSeconds, [&](Target& t, vb::Seconds d) {
    return vb::big_inserts(t.port, 1'000'000, d, 100'000, t.pid());
  });
  bandwidth("d", "(d) 10,000 documents via getMore", p.readSeconds,
            [&](Target& t, vb::Seconds d) { return vb::read_back(t.port, d, 100'000, t.pid()); });

  // (f) connection churn.
  {
    const int n = slices_of(p.churnSeconds);
    run_sliced(
        "f", "(f) connection churn", n,
        [&](Target& t, bool) {
          truncate_log(t);
          return vb::churn(t.port, p.churnConcurrency, secs(p.churnSeconds / n), 1'000'000,
                           t.pid());
        },
        [&](Target& t, const vb::Window& w) {
          workload_error(t, "(f)", w);
          if (w.seconds > 0 && w.ops > 0) {
            record("f_conn_s", t, static_cast<double>(w.ops) / w.seconds);
            if (w.cpuSeconds >= 0) {
              record("f_cpu_us_per_conn", t, w.cpuSeconds * 1e6 / static_cast<double>(w.ops));
            }
          }
        });
  }

  // The realistic variant: libmongoc as the client (its own cost included).
  if (vb::mongoc_available()) {
    run_workload("ma", "(a') libmongoc ping latency", [&](Target& t, int) {
      truncate_log(t);
      auto r = vb::mongoc_ping(t.port, secs(p.mixSeconds), p.pingCount);
      if (r.errors) {
        errors_.push_back(t.key + ": (a'): " + r.firstError);
        say("  ! %s\n", errors_.back());
      }
      if (r.p50us > 0) record("ma_p50_us", t, r.p50us);
    });
    {
      const auto& d = samples_["ma_p50_us"]["direct"];
      for (auto& t : targets_) {
        if (t.key == "direct") continue;
        const auto& v = samples_["ma_p50_us"][t.key];
        for (std::size_t r = 0; r < std::min(d.size(), v.size()); ++r) {
          record("ma_added_p50_us", t, v[r] - d[r]);
        }
      }
    }
    run_workload("mb", "(b') libmongoc 2 threads find/insert", [&](Target& t, int) {
      truncate_log(t);
      auto r = vb::mongoc_mix(t.port, 2, secs(p.mixSeconds));
      if (r.errors) {
        errors_.push_back(t.key + ": (b'): " + r.firstError);
        say("  ! %s\n", errors_.back());
      }
      if (r.opsPerSec > 0) record("mb_ops_s", t, r.opsPerSec);
      vb::drop(stubPort_, "mongoc_mix");
    });
  }

  // (e) idle connections: resident memory per connection.
  run_workload(
      "e", "(e) " + std::to_string(idleUsed_) + " idle connections",
      [&](Target& t, int) {
        // A fresh process each time: after the earlier workloads (and
        // earlier rounds of this one) the allocator holds freed memory that
        // new connections would reuse without growing the resident size.
        vb::stop(t.proc);
        if (!t.launch || !t.launch(t)) {
          errors_.push_back(t.key + ": (e): restart failed: " + t.error);
          say("  ! %s\n", errors_.back());
          return;
        }
        truncate_log(t);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        const long before = vb::rss_kib(t.pid());
        std::string e;
        auto fds = vb::open_idle(t.port, idleUsed_, vb::Seconds(120), &e);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        const long after = vb::rss_kib(t.pid());
        if (static_cast<int>(fds.size()) < idleUsed_) {
          errors_.push_back(t.key + ": (e): " + std::to_string(fds.size()) + " of " +
                            std::to_string(idleUsed_) + " connections: " + e);
          say("  ! %s\n", errors_.back());
        }
        if (!fds.empty() && before > 0 && after > 0) {
          record("e_kib_per_conn", t,
                 static_cast<double>(after - before) / static_cast<double>(fds.size()));
        }
        vb::close_all(fds);
        // Let the proxy and the stub close their sides before the next target.
        std::this_thread::sleep_for(std::chrono::milliseconds(p.mode == "smoke" ? 100 : 700));
      },
      true);

  loadEnd_ = vb::load_average();
  for (auto& t : targets_) vb::stop(t.proc);
  vb::stop(stub_);
  // What else ran: the machine's busy CPU minus ours (this process and every
  // child, all reaped by now). The load average cannot say it: the
  // benchmark itself keeps both cores busy.
  wallSeconds_ = std::chrono::duration<double>(Clock::now() - wall0).count();
  foreignCpu_ = (vb::machine_busy_seconds() - busy0) - (vb::own_cpu_seconds() - own0);
  stealCpu_ = vb::steal_seconds() - steal0;

  const auto cs = checks();
  print_table(cs);
  if (!o_.jsonPath.empty()) {
    std::ofstream f(o_.jsonPath);
    f << to_json(cs).dump(2) << "\n";
    if (!f) say("varanus-bench: cannot write %s\n", o_.jsonPath);
  }
  if (!o_.keepTmp) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  } else {
    say("kept %s\n", dir_);
  }
  if (p.mode == "smoke") return sane() ? 0 : 1;
  return errors_.empty() ? 0 : 1;
}

/// Smoke: every configuration started and every workload gave a positive
/// figure (drops and the added latency excepted: they may be 0 or less).
bool Bench::sane() const {
  bool ok = true;
  for (const auto& e : errors_) {
    if (e.find("not offered by this varanus") == std::string::npos) ok = false;
  }
  for (const auto& t : targets_) {
    if (t.unavailable) continue;  // this build has no flag for it (said in the table)
    if (!t.ok) ok = false;
    for (const auto& m : metrics()) {
      if (m.key == "b64_events_dropped" || m.key.find("added") != std::string::npos) continue;
      if (t.pid() <= 0 && (m.key.rfind("e_", 0) == 0 || m.key.rfind("g_", 0) == 0 ||
                           m.key.find("cpu") != std::string::npos)) {
        continue;
      }
      if (m.key == "g_huge_growth_mib") continue;  // may be ~0 for a streaming relay
      if (m.key.rfind("m", 0) == 0 && !vb::mongoc_available()) continue;
      if (!wanted(m.key.substr(0, m.key.find('_')))) continue;
      const double v = med(m.key, t.key);
      if (!(v > 0)) {
        std::fprintf(stderr, "smoke: %s: %s is %s\n", t.key.c_str(), m.key.c_str(),
                     fmt(v, 2).c_str());
        ok = false;
      }
    }
  }
  return ok;
}

std::vector<Check> Bench::checks() const {
  std::vector<Check> out;
  const auto ratio_check = [&](const std::string& who, const std::string& name,
                               const std::string& metric, double bound, bool atLeast) {
    Check c;
    c.name = name;
    const double v = med(metric, who), h = med(metric, "haproxy");
    char rule[64];
    std::snprintf(rule, sizeof rule, "%s %.2f", atLeast ? ">=" : "<=", bound);
    c.rule = rule;
    const double r = vs_haproxy(metric, who, metric);
    if (!std::isnan(r)) {
      c.known = true;
      c.ratio = r;
      c.pass = atLeast ? c.ratio >= bound : c.ratio <= bound;
    }
    for (const auto& m : metrics()) {
      if (m.key == metric) {
        c.detail = fmt(v, m.decimals) + " vs haproxy " + fmt(h, m.decimals);
      }
    }
    out.push_back(c);
  };
  const auto latency_check = [&](const std::string& who, const std::string& name, double slack) {
    Check c;
    c.name = name;
    const double v = med("a_added_p50_us", who), h = med("a_added_p50_us", "haproxy");
    char rule[64];
    std::snprintf(rule, sizeof rule, "<= haproxy + %.0f us", slack);
    c.rule = rule;
    // The per-round difference of the added p50s, median over the rounds.
    const double d = vs_haproxy("a_added_p50_us", who, "a_added_p50_us", true);
    if (!std::isnan(d)) {
      c.known = true;
      c.ratio = vs_haproxy("a_added_p50_us", who, "a_added_p50_us");
      c.pass = d <= slack;
    }
    c.detail = "added " + fmt(v, 1) + " us vs haproxy " + fmt(h, 1) + " us; per round " +
               (d >= 0 ? "+" : "") + fmt(d, 1) + " us";
    out.push_back(c);
  };

  const std::string f = "file";
  if (o_.tls) {
    // Issue 20: TLS on both legs, varanus with every command logged to a
    // file against haproxy with TLS on both legs, in the same run.
    ratio_check(f, "TLS, file sink: (b) 16 conns throughput >= 95% of haproxy", "b16_ops_s", 0.95,
                true);
    ratio_check(f, "TLS, file sink: (b) 64 conns throughput >= 95% of haproxy", "b64_ops_s", 0.95,
                true);
    ratio_check(f, "TLS, file sink: CPU/command at (b) 16 <= 1.2x haproxy", "b16_cpu_us_per_cmd",
                1.2, false);
    ratio_check(f, "TLS, file sink: CPU/command at (b) 64 <= 1.2x haproxy", "b64_cpu_us_per_cmd",
                1.2, false);
    latency_check(f, "TLS, file sink: (a) added p50 <= haproxy's + 5 us", 5.0);
    ratio_check(f, "TLS, file sink: (f) churn, full handshakes >= 90% of haproxy", "f_conn_s", 0.90,
                true);
    return out;
  }
  // varanus with every command logged to a file.
  ratio_check(f, "file sink: (b) 16 conns throughput >= 95% of haproxy", "b16_ops_s", 0.95, true);
  ratio_check(f, "file sink: (b) 64 conns throughput >= 95% of haproxy", "b64_ops_s", 0.95, true);
  latency_check(f, "file sink: (a) added p50 <= haproxy's + 5 us", 5.0);
  ratio_check(f, "file sink: CPU/command at (b) 64 <= 1.5x haproxy", "b64_cpu_us_per_cmd", 1.5,
              false);
  ratio_check(f, "file sink: (c) 1 MB inserts >= 90% of haproxy", "c_mb_s", 0.90, true);
  ratio_check(f, "file sink: (d) getMore read >= 90% of haproxy", "d_mb_s", 0.90, true);
  ratio_check(f, "file sink: (f) churn >= 90% of haproxy", "f_conn_s", 0.90, true);
  // varanus with no sinks: at least haproxy on every workload.
  const std::string n = "nosink";
  latency_check(n, "no sinks: (a) added p50 <= haproxy's", 0.0);
  ratio_check(n, "no sinks: (b) 16 conns >= haproxy", "b16_ops_s", 1.0, true);
  ratio_check(n, "no sinks: (b) 64 conns >= haproxy", "b64_ops_s", 1.0, true);
  ratio_check(n, "no sinks: (c) 1 MB inserts >= haproxy", "c_mb_s", 1.0, true);
  ratio_check(n, "no sinks: (d) getMore read >= haproxy", "d_mb_s", 1.0, true);
  ratio_check(n, "no sinks: (e) idle RSS/conn <= haproxy", "e_kib_per_conn", 1.0, false);
  ratio_check(n, "no sinks: (f) churn >= haproxy", "f_conn_s", 1.0, true);
  // Memory.
  for (const std::string who : {"nosink", "file", "prom"}) {
    Check c;
    c.name = who + ": (e) <= 32 KiB resident per idle connection";
    c.rule = "<= 32 KiB";
    const double v = med("e_kib_per_conn", who), h = med("e_kib_per_conn", "haproxy");
    c.detail = fmt(v, 1) + " KiB (haproxy " + fmt(h, 1) + " KiB)";
    if (!std::isnan(v)) {
      c.known = true;
      c.ratio = h > 0 ? v / h : std::nan("");
      c.pass = v <= 32.0;
    }
    out.push_back(c);
  }
  for (const std::string who : {"nosink", "file", "prom"}) {
    Check c;
    const double msgMib = static_cast<double>(hugeSent_) / 1048576.0;
    c.name = who + ": one " + fmt(msgMib, 1) + " MiB message: peak RSS growth <= message + 8 MiB";
    c.rule = "<= " + fmt(msgMib + 8, 1) + " MiB";
    const double v = med("g_huge_growth_mib", who), h = med("g_huge_growth_mib", "haproxy");
    c.detail = fmt(v, 1) + " MiB (haproxy " + fmt(h, 1) + " MiB)";
    if (!std::isnan(v) && hugeSent_ > 0) {
      c.known = true;
      c.ratio = h >= 1 ? v / h : std::nan("");  // haproxy streams: its growth is ~0
      c.pass = v <= msgMib + 8;
    }
    out.push_back(c);
  }
  for (const std::string who : {"file", "prom"}) {
    Check c;
    c.name = who + ": no events dropped at (b) 64 conns, default queue";
    c.rule = "== 0";
    const auto it = samples_.find("b64_events_dropped");
    if (it != samples_.end() && it->second.count(who)) {
      const auto& v = it->second.at(who);
      const double worst = v.empty() ? std::nan("") : *std::max_element(v.begin(), v.end());
      c.detail = "worst round: " + fmt(worst, 0) + " dropped";
      c.known = !v.empty();
      c.pass = worst == 0;
    }
    out.push_back(c);
  }
  return out;
}

void Bench::print_table(const std::vector<Check>& cs) const {
  std::printf("\nvaranus-bench (%s mode, %d rounds, medians) — %s\n", o_.plan.mode.c_str(),
              o_.plan.rounds, started_.c_str());
  utsname u{};
  ::uname(&u);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf("machine: %s %s, %u cores; load average %.2f at start, %.2f at end\n", u.sysname,
              u.release, cores, loadStart_, loadEnd_);
  // /proc/stat samples in clock ticks, getrusage sums exact run times: on a
  // quiet machine (and with hypervisor steal) the difference can fall a few
  // percent below zero.
  std::printf(
      "other processes: %.1f CPU-seconds during the %.0f s run (%.0f%% of the machine; ~0 is a "
      "quiet machine%s)\n",
      foreignCpu_, wallSeconds_, 100.0 * foreignCpu_ / std::max(1.0, wallSeconds_ * cores),
      foreignCpu_ < -0.05 ? ", below 0: /proc/stat's tick counts and exact process times differ"
                          : "");
  std::printf(
      "hypervisor steal: %.1f CPU-seconds (%.1f%% of the machine: time other guests of the host "
      "took; it makes rounds drift)\n",
      stealCpu_, 100.0 * stealCpu_ / std::max(1.0, wallSeconds_ * cores));
  if (o_.tls) {
    std::printf(
        "TLS: both legs of every target (certificates by make_certs.sh: EC P-256, one CA); the "
        "client verifies 127.0.0.1 and resumes no session; haproxy no-ssl-reuse\n");
  }
  std::printf(
      "clients: the project's wire builders over raw sockets (no driver), one client thread "
      "(epoll for many connections); (a') and (b') use libmongoc %s\n"
      "fairness: haproxy nbthread 1, varanus --io-threads 1 (plus its sink thread), stub 1 "
      "thread; all on 127.0.0.1\n",
      vb::mongoc_available() ? vb::mongoc_version() : "(not built in: no libmongoc-dev)");
  if (!flags_.note.empty() || !limitNote_.empty()) {
    std::printf("note: %s%s\n", limitNote_.c_str(), flags_.note.c_str());
  }
  std::printf("\n%-34s", "metric");
  for (const auto& t : targets_) std::printf(" %12s", t.label.c_str());
  std::printf("\n");
  // A --tls run measures a few workloads: the others' rows would be empty.
  const auto shown = [this](const Metric& m) {
    return !o_.tls || wanted(m.key.substr(0, m.key.find('_')));
  };
  for (const auto& m : metrics()) {
    if (!shown(m)) continue;
    // Pad by code points, not bytes ("µ" is two bytes).
    std::size_t cps = 0;
    for (unsigned char ch : m.label) cps += (ch & 0xC0) != 0x80;
    std::printf("%s%*s", m.label.c_str(), static_cast<int>(34 - std::min<std::size_t>(cps, 34)),
                "");
    for (const auto& t : targets_) std::printf(" %12s", fmt(med(m.key, t.key), m.decimals).c_str());
    std::printf("\n");
  }
  std::printf(
      "\nratios vs haproxy, the median of per-round ratios (higher is better for ops/s, MB/s, "
      "conn/s; lower for the rest)\n");
  std::printf("%-34s", "metric");
  for (const auto& t : targets_) {
    if (t.key != "direct" && t.key != "haproxy") std::printf(" %12s", t.label.c_str());
  }
  std::printf("\n");
  for (const auto& m : metrics()) {
    if (m.key.find("added") != std::string::npos || m.key == "b64_events_dropped" || !shown(m)) {
      continue;
    }
    std::size_t cps = 0;
    for (unsigned char ch : m.label) cps += (ch & 0xC0) != 0x80;
    std::printf("%s%*s", m.label.c_str(), static_cast<int>(34 - std::min<std::size_t>(cps, 34)),
                "");
    // The I/O thread alone is compared with haproxy's one thread.
    std::string hkey = m.key;
    if (auto at = hkey.find("_io_cpu"); at != std::string::npos) hkey.replace(at, 7, "_cpu");
    const double h = med(hkey, "haproxy");
    for (const auto& t : targets_) {
      if (t.key == "direct" || t.key == "haproxy") continue;
      // A ratio to a near-zero haproxy figure (memory growth) says nothing.
      const bool meaningful = m.key == "g_huge_growth_mib" ? h >= 1 : h > 0;
      std::printf(" %12s",
                  (meaningful ? fmt(vs_haproxy(m.key, t.key, hkey), 2) : std::string("-")).c_str());
    }
    std::printf("\n");
  }
  std::printf(o_.tls ? "\ntargets (issue 20: TLS on both legs)\n" : "\ntargets (issue 6)\n");
  int pass = 0, fail = 0, unknown = 0;
  for (const auto& c : cs) {
    const char* verdict = !c.known ? "N/A " : (c.pass ? "PASS" : "FAIL");
    (c.known ? (c.pass ? pass : fail) : unknown)++;
    std::printf("  %s  %-62s ratio %6s  (%s; %s)\n", verdict, c.name.c_str(),
                fmt(c.ratio, 2).c_str(), c.rule.c_str(), c.detail.c_str());
  }
  std::printf("  %d PASS, %d FAIL, %d not measured\n", pass, fail, unknown);
  if (!errors_.empty()) {
    std::printf("\nerrors:\n");
    for (const auto& e : errors_) std::printf("  %s\n", e.c_str());
  }
  std::fflush(stdout);
}

json Bench::to_json(const std::vector<Check>& cs) const {
  json j;
  utsname u{};
  ::uname(&u);
  j["date"] = started_;
  j["command"] = o_.commandLine;
  j["mode"] = o_.plan.mode;
  j["tls"] = o_.tls;
  j["rounds"] = o_.plan.rounds;
  j["machine"] = {{"kernel", std::string(u.sysname) + " " + u.release},
                  {"cores", std::thread::hardware_concurrency()},
                  {"loadAverageStart", loadStart_},
                  {"loadAverageEnd", loadEnd_},
                  {"otherProcessesCpuSeconds", foreignCpu_},
                  {"stealCpuSeconds", stealCpu_},
                  {"wallSeconds", wallSeconds_}};
  j["clients"] = "varanus wire builders over raw sockets, one client thread; (a') (b') libmongoc";
  j["libmongoc"] = vb::mongoc_available() ? vb::mongoc_version() : "";
  j["idleConnections"] = idleUsed_;
  j["hugeMessageBytes"] = hugeSent_;
  j["note"] = limitNote_ + flags_.note;
  for (const auto& t : targets_) {
    json jt = {{"label", t.label}, {"how", t.how}, {"ok", t.ok}};
    if (!t.error.empty()) jt["error"] = t.error;
    if (t.baseRssKib > 0) jt["startRssKib"] = t.baseRssKib;
    j["targets"][t.key] = jt;
  }
  for (const auto& m : metrics()) {
    for (const auto& t : targets_) {
      auto mi = samples_.find(m.key);
      if (mi == samples_.end() || !mi->second.count(t.key)) continue;
      const auto& v = mi->second.at(t.key);
      j["results"][m.key][t.key] = {{"median", median(v)}, {"samples", v}};
    }
  }
  for (const auto& c : cs) {
    json jc = {{"name", c.name}, {"rule", c.rule}, {"detail", c.detail}};
    jc["ratio"] = std::isnan(c.ratio) ? json() : json(c.ratio);
    jc["verdict"] = !c.known ? "N/A" : (c.pass ? "PASS" : "FAIL");
    j["checks"].push_back(jc);
  }
  j["errors"] = errors_;
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  if (!o) return 2;
  bool roundsGiven = false, idleGiven = false;
  for (int i = 1; i < argc; ++i) {
    roundsGiven = roundsGiven || std::string(argv[i]) == "--rounds";
    idleGiven = idleGiven || std::string(argv[i]) == "--idle";
  }
  apply_mode(*o, roundsGiven, idleGiven);
  if (!apply_tls_workloads(*o)) return 2;
  o->varanus = sibling_binary(o->varanus, "src/app/varanus");
  o->stub = sibling_binary(o->stub, "src/stub/varanus-stub");
  try {
    Bench b(std::move(*o));
    return b.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "varanus-bench: %s\n", e.what());
    return 1;
  }
}
