// Protocol sniffing: a connection's first bytes tell TLS, HTTP, MongoDB.
#include "varanus/wire/sniff.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "support.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus::wire;
using Bytes = std::vector<std::uint8_t>;
using varanus::wire::test::Doc;

namespace {

Bytes bytes(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

Protocol sniff(const Bytes& b, std::size_t n) {
  return sniff_protocol(std::span(b.data(), std::min(n, b.size())));
}

// The first bytes of a real TLS 1.3 ClientHello (record version 3.1, record
// length 0x0200, handshake type 1, length 0x0001fc, client version 3.3, random...).
const Bytes kClientHello = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5e,
                            0x21, 0x9a, 0x44, 0x07, 0xc1, 0x2b, 0x90, 0x11, 0x3f, 0x6d, 0xe0, 0x8a};

}  // namespace

TEST_CASE("sniff: a TLS ClientHello is tls once its first 16 bytes are in, not before") {
  for (std::size_t n = 1; n < 16; ++n)
    CHECK_MESSAGE(sniff(kClientHello, n) == Protocol::unknown_yet, n);
  CHECK(sniff(kClientHello, 16) == Protocol::tls);
  CHECK(sniff(kClientHello, kClientHello.size()) == Protocol::tls);
  // TLS 1.0 record versions (3.0 .. 3.4) all count; 3.5 does not.
  for (int minor : {0, 1, 2, 3, 4}) {
    Bytes b = kClientHello;
    b[2] = static_cast<std::uint8_t>(minor);
    CHECK(sniff(b, 16) == Protocol::tls);
  }
  Bytes bad = kClientHello;
  bad[2] = 5;
  CHECK(sniff(bad, 16) == Protocol::other);
  // A TLS alert or application data record is not a client's first bytes.
  Bytes alert = kClientHello;
  alert[5] = 0x02;  // server_hello
  CHECK(sniff(alert, 16) == Protocol::other);
}

TEST_CASE("sniff: MongoDB messages (OP_MSG, OP_QUERY) are mongodb at 16 bytes") {
  Doc hello(R"({"hello": 1, "$db": "admin"})");
  const Frame msg = build_op_msg(7, 0, 0, hello);
  const Frame query = build_op_query(8, 0, 0, "admin.$cmd", 0, -1, hello);
  for (const Frame* f : {&msg, &query}) {
    const Bytes b(f->begin(), f->end());
    for (std::size_t n = 1; n < 16; ++n) CHECK(sniff(b, n) == Protocol::unknown_yet);
    CHECK(sniff(b, 16) == Protocol::mongodb);
    CHECK(sniff(b, b.size()) == Protocol::mongodb);
  }
  // An unknown opCode or an absurd length: not MongoDB.
  Bytes b(msg.begin(), msg.end());
  b[12] = 0x99;
  CHECK(sniff(b, 16) == Protocol::other);
  Bytes tooLong(msg.begin(), msg.end());
  tooLong[3] = 0x7f;
  CHECK(sniff(tooLong, 4) == Protocol::other);
  Bytes tooShort(msg.begin(), msg.end());
  tooShort[0] = 8;
  tooShort[1] = tooShort[2] = tooShort[3] = 0;
  CHECK(sniff(tooShort, 4) == Protocol::other);
  // The limit is the caller's: 1000 bytes max makes a 1001-byte message other.
  Bytes big(msg.begin(), msg.end());
  big[0] = 0xe9;
  big[1] = 0x03;  // 1001
  big[2] = big[3] = 0;
  CHECK(sniff_protocol(std::span(big.data(), 16), 1000) == Protocol::other);
  CHECK(sniff_protocol(std::span(big.data(), 16), 2000) == Protocol::mongodb);
}

TEST_CASE("sniff: HTTP requests are http as soon as the method and a space are in") {
  for (std::string_view req :
       {"GET / HTTP/1.1\r\n", "POST /x HTTP/1.1\r\n", "PUT /", "HEAD / HTTP/1.0", "DELETE /a",
        "OPTIONS * HTTP/1.1", "PATCH /", "CONNECT host:443 HTTP/1.1", "TRACE /",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}) {
    const Bytes b = bytes(req);
    const std::size_t methodLen = req.starts_with("PRI") ? 12 : req.find(' ') + 1;
    for (std::size_t n = 1; n < methodLen; ++n)
      CHECK_MESSAGE(sniff(b, n) == Protocol::unknown_yet, req, " ", n);
    CHECK_MESSAGE(sniff(b, methodLen) == Protocol::http, req);
  }
  CHECK(sniff(bytes("GETX / HTTP/1.1\r\n"), 16) == Protocol::other);
}

TEST_CASE("sniff: nothing yet is unknown_yet and garbage is other") {
  CHECK(sniff_protocol({}) == Protocol::unknown_yet);
  CHECK(sniff(bytes("hello world, this is text"), 25) == Protocol::other);
  const Bytes zeros(16, 0);
  CHECK(sniff(zeros, 4) == Protocol::other);  // messageLength 0
  CHECK(to_string(Protocol::tls) == "tls");
  CHECK(to_string(Protocol::mongodb) == "mongodb");
  CHECK(to_string(Protocol::http) == "http");
  CHECK(to_string(Protocol::other) == "other");
  CHECK(to_string(Protocol::unknown_yet) == "unknown_yet");
}
