// The upstream connection string: what is read, what is refused and how the
// error names it.
#include "varanus/proxy/connection_string.hpp"

#include <doctest/doctest.h>

#include <string>

using varanus::proxy::ConnectionString;
using varanus::proxy::ConnectionStringError;
using varanus::proxy::Endpoint;

namespace {

std::string error_of(const std::string& text) {
  try {
    ConnectionString::parse(text);
  } catch (const ConnectionStringError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("HOST:PORT keeps its meaning: one server, not a URI") {
  const auto cs = ConnectionString::parse("Db.Example:27019");
  CHECK_FALSE(cs.uri);
  REQUIRE(cs.seeds.size() == 1);
  CHECK(cs.seeds[0] == Endpoint{"Db.Example", 27019});
  CHECK(cs.single_server());
  CHECK(cs.to_string() == "Db.Example:27019");
  CHECK(ConnectionString::parse("[::1]:27017").seeds[0] == Endpoint{"::1", 27017});
  CHECK(error_of("db") ==
        "expected HOST:PORT or mongodb://HOST:PORT,..., got 'db': no port in \"db\"");
}

TEST_CASE("a replica-set string: seeds, replicaSet, timeouts") {
  const auto cs = ConnectionString::parse(
      "mongodb://H1.example:27017,h2,[::1]:27019/app?replicaSet=rs0&connectTimeoutMS=2500"
      "&HEARTBEATFREQUENCYMS=1000");
  CHECK(cs.uri);
  REQUIRE(cs.seeds.size() == 3);
  CHECK(cs.seeds[0] == Endpoint{"h1.example", 27017});
  CHECK(cs.seeds[1] == Endpoint{"h2", 27017});  // default port
  CHECK(cs.seeds[2] == Endpoint{"::1", 27019});
  CHECK(cs.replicaSet == "rs0");
  CHECK(cs.connectTimeout == std::chrono::milliseconds(2500));
  CHECK(cs.heartbeatFrequency == std::chrono::milliseconds(1000));
  CHECK_FALSE(cs.single_server());
  CHECK(cs.to_string() ==
        "mongodb://h1.example:27017,h2:27017,[::1]:27019/"
        "?replicaSet=rs0&connectTimeoutMS=2500&heartbeatFrequencyMS=1000");
}

TEST_CASE("which strings are one server") {
  CHECK(ConnectionString::parse("mongodb://db:27017").single_server());
  CHECK(ConnectionString::parse("mongodb://db:27017/").single_server());
  CHECK_FALSE(ConnectionString::parse("mongodb://db:27017/?replicaSet=rs0").single_server());
  CHECK_FALSE(ConnectionString::parse("mongodb://m1:27017,m2:27017/").single_server());
  CHECK(ConnectionString::parse("mongodb://db/?replicaSet=rs0&directConnection=true")
            .single_server());
}

TEST_CASE("the TLS options are parsed into the struct") {
  const auto cs = ConnectionString::parse(
      "mongodb://db:27017/?ssl=true&tlsCAFile=%2Fetc%2Fca.pem&tlsCertificateKeyFile=/k.pem"
      "&tlsInsecure=false");
  CHECK(cs.tls == true);
  CHECK(cs.tlsCAFile == "/etc/ca.pem");
  CHECK(cs.tlsCertificateKeyFile == "/k.pem");
  CHECK(cs.tlsInsecure == false);
  CHECK(error_of("mongodb://db/?tls=true&ssl=false") == "options tls and ssl disagree");
  CHECK(error_of("mongodb://db/?tls=false&tlsCAFile=a.pem") ==
        "tls=false with tlsCAFile, tlsCertificateKeyFile or tlsInsecure");
  CHECK(error_of("mongodb://db/?tls=yes") == "option tls: expected true or false, got 'yes'");
}

TEST_CASE("unsupported things are errors naming them") {
  CHECK(
      error_of("mongodb+srv://cluster0.example.net/").rfind("mongodb+srv:// is not supported", 0) ==
      0);
  CHECK(error_of("mongodb://db/?loadBalanced=true")
            .rfind("option loadBalanced is not supported", 0) == 0);
  CHECK(error_of("mongodb://db/?w=majority").rfind("option w is not supported by varanus", 0) == 0);
  CHECK(
      error_of("postgres://db:5432").rfind("expected HOST:PORT or mongodb://..., got scheme", 0) ==
      0);
  CHECK(error_of("mongodb://%2Ftmp%2Fmongodb-27017.sock").find("Unix domain sockets") !=
        std::string::npos);
}

TEST_CASE("credentials are refused without being echoed") {
  const std::string e = error_of("mongodb://alice:s3cret@db:27017/?replicaSet=rs0");
  CHECK(e.rfind("credentials (user:password@) are not supported", 0) == 0);
  CHECK(e.find("s3cret") == std::string::npos);
  CHECK(e.find("alice") == std::string::npos);
}

TEST_CASE("malformed strings") {
  CHECK(error_of("mongodb://") == "no host in the connection string");
  CHECK(error_of("mongodb://a,,b/") == "empty host in the host list");
  CHECK(error_of("mongodb://db:99999/").rfind("host 'db:99999': expected HOST[:PORT]", 0) == 0);
  CHECK(error_of("mongodb://db?replicaSet=rs0") == "expected '/' before the options ('?')");
  CHECK(error_of("mongodb://db/?replicaSet") == "option 'replicaSet' has no value");
  CHECK(error_of("mongodb://db/?replicaSet=a&replicaset=b") == "option replicaset given twice");
  CHECK(error_of("mongodb://db:1,DB:1/") == "host db:1 given twice");
  CHECK(error_of("mongodb://db/?heartbeatFrequencyMS=100") ==
        "option heartbeatFrequencyMS: expected milliseconds from 500 to 86400000, got '100'");
  CHECK(error_of("mongodb://db/?connectTimeoutMS=0").rfind("option connectTimeoutMS", 0) == 0);
  CHECK(error_of("mongodb://a,b/?directConnection=true") ==
        "directConnection=true with several hosts");
  CHECK(error_of("mongodb://db/?replicaSet=%zz") ==
        "invalid percent-encoding in option replicaSet");
}
