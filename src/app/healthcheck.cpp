// varanus app — `varanus healthcheck` (see healthcheck.hpp).
#include "healthcheck.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "cli.hpp"
#include "sink_config.hpp"
#include "varanus/sinks/metrics.hpp"

namespace varanus::app {

namespace {

constexpr std::chrono::milliseconds kTimeout{3000};

/// Where to reach a service bound to `host`: a wildcard address is reached
/// on the loopback of the same family.
std::string reachable_host(const std::string& host) {
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

/// The status line's code of GET /healthz, or -1 with `error` set.
int http_get_healthz(const std::string& host, std::uint16_t port, std::string& error,
                     std::string& body) {
  const int fd = sinks::connect_tcp(host, port, kTimeout, error);
  if (fd < 0) return -1;
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: " + host +
                              "\r\nUser-Agent: varanus-healthcheck\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    error = "cannot send the request";
    ::close(fd);
    return -1;
  }
  std::string response;
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      error = "no answer within " + std::to_string(kTimeout.count()) + " ms";
      ::close(fd);
      return -1;
    }
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    response.append(buf, static_cast<std::size_t>(n));
    if (response.size() > 65536) break;
  }
  ::close(fd);
  // "HTTP/1.1 200 OK\r\n..."
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) {
    error = "not an HTTP response";
    return -1;
  }
  if (const auto end = response.find("\r\n\r\n"); end != std::string::npos)
    body = response.substr(end + 4);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  return std::stoi(response.substr(9, 3));
}

}  // namespace

int run_healthcheck(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "-h" || a == "--help") {
      std::fputs(
          "usage: varanus healthcheck [options]\n\n"
          "Checks a running varanus, for a container HEALTHCHECK or a probe. Takes the\n"
          "proxy's options (flags, VARANUS_* variables, --config FILE) to find it: with an\n"
          "admin endpoint, GET /healthz there (healthy on 200: varanus runs and reaches its\n"
          "upstream); without one, a TCP connect to the listen address. A wildcard\n"
          "address (0.0.0.0, ::) is reached on loopback. Waits at most 3 s.\n\n"
          "exit status: 0 healthy, 1 unhealthy, 2 usage or config error.\n",
          stdout);
      return 0;
    }
  }
  Cli cli = parse_cli(args, varanus_environment());
  if (cli.action == Cli::Action::error) {
    std::fprintf(stderr, "%s\n", cli.error.c_str());
    return 2;
  }
  SinkPlan plan;
  try {
    plan = plan_sinks(cli.config.sinks, cli.sinkFlags, cli.config.maxDocumentLength);
  } catch (const SinkConfigError& e) {
    std::fprintf(stderr, "varanus healthcheck: %s\n", e.what());
    return 2;
  }
  std::string error;
  if (plan.admin && plan.admin->port != 0) {
    const std::string host = reachable_host(plan.admin->host);
    const std::string url =
        "http://" + proxy::Endpoint{host, plan.admin->port}.to_string() + "/healthz";
    std::string body;
    const int status = http_get_healthz(host, plan.admin->port, error, body);
    if (status < 0) {
      std::printf("unhealthy: %s: %s\n", url.c_str(), error.c_str());
      return 1;
    }
    std::printf("%s: %s: %d %s\n", status == 200 ? "healthy" : "unhealthy", url.c_str(), status,
                body.c_str());
    return status == 200 ? 0 : 1;
  }
  const auto& listen = cli.config.proxy.listen;
  const std::string host = reachable_host(listen.host);
  const std::string where = proxy::Endpoint{host, listen.port}.to_string();
  if (listen.port == 0) {
    std::printf(
        "unhealthy: the listen port is 0 (chosen at start) and there is no admin endpoint\n");
    return 1;
  }
  const int fd = sinks::connect_tcp(host, listen.port, kTimeout, error);
  if (fd < 0) {
    std::printf("unhealthy: listener %s: %s\n", where.c_str(), error.c_str());
    return 1;
  }
  ::close(fd);
  std::printf("healthy: listener %s accepts connections\n", where.c_str());
  return 0;
}

}  // namespace varanus::app
