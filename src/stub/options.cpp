#include "options.hpp"

#include <charconv>
#include <string_view>

namespace varanus::stub {

std::string usage() {
  return R"(usage: varanus-stub [options]

A protocol-faithful MongoDB stand-in for tests and benchmarks (in-memory,
no persistence). Prints the bound address(es) on stdout, one per line,
then serves until SIGTERM or SIGINT.

  --listen HOST:PORT       address to bind (default 127.0.0.1:27017; port 0 = any
                           free port; IPv6 as [::1]:0)
  --threads N              I/O threads, each with its own io_context (default 2)
  --max-wire-version N     maxWireVersion in hello replies (default 17 = MongoDB 6.0)
  --compressors LIST       compressors offered, comma-separated, from snappy,zlib,zstd
                           (default all three; "none" for none)
  --replset NAME           run as a replica set named NAME ...
  --members N              ... of N members on N consecutive ports (port 0: N free
                           ports); the first member starts as primary
  --mongos                 answer hellos as a mongos does (msg "isdbgrid", no
                           setName/hosts/me); one process is one mongos, so
                           start two for two; not with --replset
  --close-after N          fault: close each connection when its N-th message arrives
  --delay-ms M             fault: delay every reply by M milliseconds
  --reset                  fault: close connections with RST instead of FIN
  --tls-cert FILE          serve TLS (only) with this PEM certificate (then any
                           intermediates); plaintext clients are refused
  --tls-key FILE           its PEM private key (default: in the --tls-cert file)
  --tls-ca FILE            require client certificates signed by these CAs
  --verbose                log each request on stderr
  --help                   this text

Admin commands (on the admin database; MEMBER is "host:port" as hellos list it):
  {stubFault: 1, closeAfter: N, delayMs: M, reset: bool, thisConnection: bool}
  {replSetStepDown: 1}     the primary steps down; the next member becomes primary
  {replSetStepUp: 1}       the member that receives it becomes primary
  {stubStopMember: MEMBER} the member dies like a killed mongod: listener closed
                           (connects refused), its connections closed; a primary
                           hands over to the next running member (term + 1)
  {stubStartMember: MEMBER}  it restarts on its port: new processId, counter 0,
                           a secondary (primary if the set has none)
  {stubHangMember: MEMBER, hang: bool}  accepts and reads, answers nothing
                           until hang: false (default true)
  {stubAddMember: 1, port: P}  a new secondary on port P (0: a free port;
                           no port: the port after the highest member's when
                           --listen had a fixed port, else a free port);
                           setVersion + 1; answers {host: "HOST:PORT"}
  {stubRemoveMember: MEMBER}  out of the config (setVersion + 1); it keeps
                           running and answers hello as a removed mongod
)";
}

namespace {

template <class T>
bool parse_number(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool parse_listen(std::string_view s, Options& o) {
  std::string_view host;
  std::string_view port;
  if (s.starts_with('[')) {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return false;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  if (host.empty()) return false;
  o.host = std::string(host);
  return parse_number(port, o.port);
}

bool parse_compressors(std::string_view s, Options& o) {
  o.compressors.clear();
  if (s == "none") return true;
  while (!s.empty()) {
    auto comma = s.find(',');
    std::string_view name = s.substr(0, comma);
    auto c = wire::compressor_from_name(name);
    if (!c || *c == wire::Compressor::noop) return false;
    o.compressors.push_back(*c);
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  return true;
}

}  // namespace

ParseResult parse_options(int argc, char** argv) {
  Options o;
  ParseResult r;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    // Accept both "--opt value" and "--opt=value".
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto need_value = [&]() -> bool {
      if (!value.empty()) return true;
      if (i + 1 >= argc) return false;
      value = argv[++i];
      return true;
    };
    auto bad = [&](std::string_view what) {
      r.message = "varanus-stub: " + std::string(what) + "\n" + usage();
      return r;
    };
    if (arg == "--help" || arg == "-h") {
      r.help = true;
      r.message = usage();
      return r;
    } else if (arg == "--verbose" || arg == "-v") {
      o.verbose = true;
    } else if (arg == "--reset") {
      o.faults.reset = true;
    } else if (arg == "--mongos") {
      o.mongos = true;
    } else if (arg == "--tls-cert" || arg == "--tls-key" || arg == "--tls-ca") {
      if (!need_value()) return bad(std::string(arg) + " needs a file name");
      (arg == "--tls-cert"  ? o.tlsCert
       : arg == "--tls-key" ? o.tlsKey
                            : o.tlsCa) = std::string(value);
    } else if (arg == "--listen") {
      if (!need_value() || !parse_listen(value, o)) return bad("--listen needs HOST:PORT");
    } else if (arg == "--threads") {
      if (!need_value() || !parse_number(value, o.threads) || o.threads < 1 || o.threads > 256) {
        return bad("--threads needs a number from 1 to 256");
      }
    } else if (arg == "--max-wire-version") {
      if (!need_value() || !parse_number(value, o.maxWireVersion) || o.maxWireVersion < 0) {
        return bad("--max-wire-version needs a number");
      }
    } else if (arg == "--compressors") {
      if (!need_value() || !parse_compressors(value, o)) {
        return bad("--compressors needs a list from snappy,zlib,zstd or none");
      }
    } else if (arg == "--replset") {
      if (!need_value()) return bad("--replset needs a name");
      o.replSet = std::string(value);
    } else if (arg == "--members") {
      if (!need_value() || !parse_number(value, o.members) || o.members < 1 || o.members > 50) {
        return bad("--members needs a number from 1 to 50");
      }
    } else if (arg == "--close-after") {
      if (!need_value() || !parse_number(value, o.faults.closeAfter) || o.faults.closeAfter < 0) {
        return bad("--close-after needs a number");
      }
    } else if (arg == "--delay-ms") {
      if (!need_value() || !parse_number(value, o.faults.delayMs) || o.faults.delayMs < 0) {
        return bad("--delay-ms needs a number");
      }
    } else {
      return bad("unknown option " + std::string(arg));
    }
  }
  if (o.tlsCert.empty() && (!o.tlsKey.empty() || !o.tlsCa.empty())) {
    r.message = "varanus-stub: --tls-key and --tls-ca need --tls-cert\n";
    return r;
  }
  if (o.mongos && !o.replSet.empty()) {
    r.message =
        "varanus-stub: --mongos and --replset " + o.replSet +
        " cannot be combined: a mongos belongs to no replica set (start one stub per mongos)\n";
    return r;
  }
  if (o.members > 1 && o.replSet.empty()) {
    r.message = "varanus-stub: --members needs --replset NAME\n";
    return r;
  }
  r.options = std::move(o);
  return r;
}

}  // namespace varanus::stub
