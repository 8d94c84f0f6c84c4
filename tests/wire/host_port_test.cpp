// parse_host_port / format_host_port: the one reading of "host:port".
#include "varanus/wire/host_port.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace varanus::wire;

TEST_CASE("host:port and [v6]:port split into host and port") {
  HostPort hp = parse_host_port("mongo.example:27017");
  REQUIRE(hp.ok());
  CHECK(hp.host == "mongo.example");
  CHECK(hp.port == 27017);

  hp = parse_host_port("[::1]:27017");
  REQUIRE(hp.ok());
  CHECK(hp.host == "::1");
  CHECK(hp.port == 27017);

  hp = parse_host_port("[fe80::1%eth0]:0");
  REQUIRE(hp.ok());
  CHECK(hp.host == "fe80::1%eth0");
  CHECK(hp.port == 0);

  hp = parse_host_port("127.0.0.1:65535");
  REQUIRE(hp.ok());
  CHECK(hp.port == 65535);
}

TEST_CASE("the port may be left out only when optional") {
  HostPort hp = parse_host_port("collector", PortRule::optional);
  REQUIRE(hp.ok());
  CHECK(hp.host == "collector");
  CHECK_FALSE(hp.port.has_value());

  hp = parse_host_port("[::1]", PortRule::optional);
  REQUIRE(hp.ok());
  CHECK(hp.host == "::1");
  CHECK_FALSE(hp.port.has_value());

  hp = parse_host_port("collector");
  CHECK_FALSE(hp.ok());
  CHECK(hp.error == "no port in \"collector\"");
}

TEST_CASE("malformed text is refused with the cause named") {
  struct Case {
    const char* text;
    const char* error;
  };
  const Case cases[] = {
      {":27017", "no host in \":27017\""},
      {"[]:27017", "no host in \"[]:27017\""},
      {"", "no host in \"\""},
      {"[::1:27017", "unclosed '[' in \"[::1:27017\""},
      {"[::1]27017", "expected ':port' after ']' in \"[::1]27017\""},
      {"::1:27017", "an IPv6 address needs brackets ([::1]:27017) in \"::1:27017\""},
      {"h:", "port \"\" is not a number from 0 to 65535 in \"h:\""},
      {"h:65536", "port \"65536\" is not a number from 0 to 65535 in \"h:65536\""},
      {"h:-1", "port \"-1\" is not a number from 0 to 65535 in \"h:-1\""},
      {"h:80x", "port \"80x\" is not a number from 0 to 65535 in \"h:80x\""},
      {"[::1]:", "port \"\" is not a number from 0 to 65535 in \"[::1]:\""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    const HostPort hp = parse_host_port(c.text, PortRule::optional);
    CHECK_FALSE(hp.ok());
    CHECK(hp.error == c.error);
    CHECK_FALSE(hp.port.has_value());
  }
}

TEST_CASE("format_host_port brackets IPv6 hosts and reads back") {
  CHECK(format_host_port("127.0.0.1", 27017) == "127.0.0.1:27017");
  CHECK(format_host_port("::1", 27018) == "[::1]:27018");
  CHECK(format_host_port("[::1]", 1) == "[::1]:1");
  for (const char* host : {"localhost", "10.0.0.7", "::1", "2001:db8::5"}) {
    CAPTURE(host);
    const std::string text = format_host_port(host, 4242);
    const HostPort hp = parse_host_port(text);
    REQUIRE(hp.ok());
    CHECK(hp.host == host);
    CHECK(hp.port == 4242);
  }
}
