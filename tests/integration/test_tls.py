#!/usr/bin/env python3
"""TLS through varanus (issue 20): real drivers in each combination of legs,
mutual TLS, each handshake failure as a connectionClosed event with its reason
and a counter, a TLS client at a plaintext listener (and plaintext at a TLS
listener) diagnosed at once, certificate rotation by SIGHUP while a client
keeps working, the certificate-expiry gauge.

These need proxy::Server to relay TLS legs (the relay's part of issue 20):
until then varanus refuses a TLS configuration at start-up and these tests
fail there, clearly.

    test_tls.py [unittest args]
Environment: VARANUS_BIN, VARANUS_STUB, VARANUS_MONGOC_CLIENT (optional),
VARANUS_NODE (optional: node binary; node/node_modules from setup-node.sh).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymongo import MongoClient  # noqa: E402
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError  # noqa: E402

from harness import Server, start_stub, wait_for  # noqa: E402
from tls_certs import cert, cert_dir  # noqa: E402

PROXY = os.environ.get("VARANUS_BIN", "")
HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 15.0


def tls_stub(*extra):
    return start_stub(None, "--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"), *extra)


def server_tls(base="server"):
    return ["--tls-cert", cert(f"{base}.pem"), "--tls-key", cert(f"{base}.key")]


def upstream_tls(*extra):
    return ["--upstream-tls", "--upstream-tls-ca", cert("ca.pem"), *extra]


def proxy(upstream, *flags):
    return Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", upstream, "--admin", "127.0.0.1:0", *flags],
                  name="varanus", address_from="stderr", address_regex=r"listening on ([^\s,]+)").start()


def events(px, kind=None):
    out = []
    for line in px.stdout_lines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if kind is None or e.get("event") == kind:
            out.append(e)
    return out


def metrics(px):
    m = wait_for(lambda: re.search(r"admin endpoint on (?:http://)?(\S+)", px.stderr()), "the admin endpoint line",
                 timeout=10)
    return urllib.request.urlopen(f"http://{m.group(1)}/metrics", timeout=10).read().decode()


def metric(px, series):
    for line in metrics(px).splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def client(addr, tls=False, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    if tls:
        kw.setdefault("tls", True)
        kw.setdefault("tlsCAFile", cert("ca.pem"))
    return MongoClient(f"mongodb://{addr}/", directConnection=True, **kw)


def workload(test, c):
    """A few commands; returns nothing, asserts the replies."""
    test.assertEqual(c.admin.command("ping")["ok"], 1.0)
    coll = c.tlsdb.things
    coll.insert_many([{"_id": i, "v": i} for i in range(20)])
    test.assertEqual([d["_id"] for d in coll.find({"v": {"$lt": 5}}).sort("_id")], list(range(5)))
    test.assertEqual(coll.delete_many({}).deleted_count, 20)


class CombinationsTest(unittest.TestCase):
    """PyMongo through varanus with each leg plaintext or TLS."""

    def check(self, client_tls, upstream_is_tls):
        stub_cm = tls_stub() if upstream_is_tls else start_stub(None)
        with stub_cm as stub:
            flags = (server_tls() if client_tls else []) + (upstream_tls() if upstream_is_tls else [])
            with proxy(stub.address, *flags) as px:
                with client(px.address, tls=client_tls) as c:
                    workload(self, c)
                names = wait_for(lambda: {e.get("commandName") for e in events(px, "commandSucceeded")} >=
                                 {"ping", "insert", "find", "delete"} and events(px, "commandSucceeded"),
                                 "the workload's events (the proxy inspects the plaintext)", timeout=TIMEOUT)
                self.assertTrue(names)

    def test_tls_to_tls(self):
        self.check(True, True)

    def test_plain_to_tls(self):
        self.check(False, True)

    def test_tls_to_plain(self):
        self.check(True, False)

    def test_plain_to_plain(self):
        self.check(False, False)


class OtherDriversTest(unittest.TestCase):
    """libmongoc and the Node driver through varanus, each leg plaintext or
    TLS: the four combinations, like PyMongo's above."""

    COMBINATIONS = ((True, True), (False, True), (True, False), (False, False))

    def run_client(self, argv_of_uri):
        for client_tls, upstream_is_tls in self.COMBINATIONS:
            with self.subTest(client_tls=client_tls, upstream_tls=upstream_is_tls):
                stub_cm = tls_stub() if upstream_is_tls else start_stub(None)
                with stub_cm as stub:
                    flags = ((server_tls() if client_tls else []) +
                             (upstream_tls() if upstream_is_tls else []))
                    with proxy(stub.address, *flags) as px:
                        uri = f"mongodb://{px.address}/?directConnection=true"
                        if client_tls:
                            uri += f"&tls=true&tlsCAFile={cert('ca.pem')}"
                        r = subprocess.run(argv_of_uri(uri), capture_output=True, text=True,
                                           timeout=120, cwd=HERE)
                        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                        wait_for(lambda: events(px, "commandSucceeded"), "events",
                                 timeout=TIMEOUT)

    def test_libmongoc(self):
        binary = os.environ.get("VARANUS_MONGOC_CLIENT")
        self.assertTrue(binary, "VARANUS_MONGOC_CLIENT is not set (CMake sets it)")
        self.run_client(lambda uri: [binary, uri, "none"])

    def test_node(self):
        node = os.environ.get("VARANUS_NODE") or shutil.which("node")
        self.assertTrue(node, "node not found")
        self.run_client(lambda uri: [node, os.path.join(HERE, "node", "workload.js"), uri, "none"])


class MutualTlsTest(unittest.TestCase):
    def test_client_certificate_accepted_and_refused(self):
        with start_stub(None) as stub, proxy(stub.address, *server_tls(), "--tls-ca", cert("ca.pem")) as px:
            with client(px.address, tls=True, tlsCertificateKeyFile=cert("client-bundle.pem")) as c:
                self.assertEqual(c.admin.command("ping")["ok"], 1.0)
            with client(px.address, tls=True, serverSelectionTimeoutMS=2000) as c:
                with self.assertRaises((ServerSelectionTimeoutError, AutoReconnect)):
                    c.admin.command("ping")
            closed = wait_for(lambda: [e for e in events(px, "connectionClosed") if "certificate" in e.get("reason", "")],
                              "a connectionClosed naming the missing certificate", timeout=TIMEOUT)
            self.assertIn("peer did not return a certificate", closed[0]["reason"])
            self.assertGreaterEqual(
                metric(px, 'varanus_tls_handshake_failures_total{leg="client",reason="no_client_cert"}') or 0, 1)


class HandshakeFailureTest(unittest.TestCase):
    """Each failure: its connectionClosed reason and its counter."""

    def upstream_failure(self, stub_cert, reason_text, label, host=None):
        with start_stub(None, "--tls-cert", cert(f"{stub_cert}.pem"), "--tls-key", cert(f"{stub_cert}.key")) as stub:
            upstream = stub.address if host is None else f"{host}:{stub.port}"
            with proxy(upstream, *upstream_tls()) as px:
                with client(px.address, serverSelectionTimeoutMS=2000) as c:
                    with self.assertRaises((ServerSelectionTimeoutError, AutoReconnect)):
                        c.admin.command("ping")
                closed = wait_for(lambda: [e for e in events(px, "connectionClosed") if reason_text in e.get("reason", "")],
                                  f"a connectionClosed with '{reason_text}'", timeout=TIMEOUT)
                self.assertTrue(closed)
                self.assertIn(reason_text, px.stderr())
                self.assertGreaterEqual(
                    metric(px, f'varanus_tls_handshake_failures_total{{leg="upstream",reason="{label}"}}') or 0, 1)

    def test_unknown_ca(self):
        self.upstream_failure("unknown", "unable to get local issuer certificate", "unknown_ca")

    def test_expired(self):
        self.upstream_failure("expired", "certificate has expired", "expired")

    def test_hostname_mismatch(self):
        self.upstream_failure("otherhost", "hostname mismatch", "hostname_mismatch", host="localhost")

    def test_protocol_version(self):
        with start_stub(None) as stub, proxy(stub.address, *server_tls(), "--tls-min-version", "1.3") as px:
            # A client that speaks TLS 1.2 at most.
            r = subprocess.run(["openssl", "s_client", "-connect", px.address, "-tls1_2", "-CAfile", cert("ca.pem")],
                               input="", capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            wait_for(lambda: [e for e in events(px, "connectionClosed") if "protocol version" in e.get("reason", "")],
                     "a connectionClosed naming the protocol version", timeout=TIMEOUT)
            self.assertGreaterEqual(
                metric(px, 'varanus_tls_handshake_failures_total{leg="client",reason="protocol_version"}') or 0, 1)


class DiagnosisTest(unittest.TestCase):
    def test_tls_client_at_plaintext_listener(self):
        with start_stub(None) as stub, proxy(stub.address) as px:
            started = time.monotonic()
            with client(px.address, tls=True, serverSelectionTimeoutMS=3000) as c:
                with self.assertRaises((ServerSelectionTimeoutError, AutoReconnect)):
                    c.admin.command("ping")
            line = wait_for(lambda: re.search(r".*TLS.*--tls-cert.*", px.stderr()),
                            "a diagnostic naming TLS and --tls-cert", timeout=5)
            self.assertTrue(line)
            closed = wait_for(lambda: [e for e in events(px, "connectionClosed") if "TLS" in e.get("reason", "")],
                              "a connectionClosed naming TLS", timeout=5)
            self.assertTrue(closed)
            self.assertLess(time.monotonic() - started, 10)
            self.assertGreaterEqual(
                metric(px, "varanus_client_tls_at_plaintext_listener_total") or 0, 1)

    def test_plaintext_at_tls_listener(self):
        with start_stub(None) as stub, proxy(stub.address, *server_tls()) as px:
            with client(px.address, tls=False, serverSelectionTimeoutMS=2000) as c:
                with self.assertRaises((ServerSelectionTimeoutError, AutoReconnect)):
                    c.admin.command("ping")
            wait_for(lambda: [e for e in events(px, "connectionClosed") if "plaintext" in e.get("reason", "")],
                     "a connectionClosed naming plaintext at the TLS listener", timeout=5)
            self.assertGreaterEqual(
                metric(px, 'varanus_tls_handshake_failures_total{leg="client",reason="not_tls"}') or 0, 1)


class RotationTest(unittest.TestCase):
    def test_sighup_rotates_while_a_client_keeps_working(self):
        d = os.path.join(cert_dir(), "rotation")
        os.makedirs(d, exist_ok=True)
        shutil.copy(cert("server.pem"), os.path.join(d, "cert.pem"))
        shutil.copy(cert("server.key"), os.path.join(d, "key.pem"))
        with start_stub(None) as stub, proxy(stub.address, "--tls-cert", os.path.join(d, "cert.pem"), "--tls-key",
                                             os.path.join(d, "key.pem")) as px:
            stop = threading.Event()
            errors = []
            pings = [0]

            def keep_working():
                with client(px.address, tls=True) as c:
                    while not stop.is_set():
                        try:
                            c.admin.command("ping")
                            pings[0] += 1
                        except Exception as e:  # noqa: BLE001 (reported below)
                            errors.append(repr(e))
                            return

            t = threading.Thread(target=keep_working)
            t.start()
            try:
                wait_for(lambda: pings[0] > 5, "pings before the rotation")
                shutil.copy(cert("server2.pem"), os.path.join(d, "cert.pem"))
                shutil.copy(cert("server2.key"), os.path.join(d, "key.pem"))
                px.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: "certificates reloaded" in px.stderr(), "the reload line")
                before = pings[0]
                wait_for(lambda: pings[0] > before + 5, "pings after the rotation")
                # A new connection gets the new certificate.
                r = subprocess.run(["openssl", "s_client", "-connect", px.address, "-CAfile", cert("ca.pem")],
                                   input="", capture_output=True, text=True, timeout=30)
                served = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=r.stdout,
                                        capture_output=True, text=True).stdout
                expected = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", cert("server2.pem")],
                                          capture_output=True, text=True).stdout
                self.assertEqual(served, expected)
                # A bad reload keeps the certificates and says why.
                with open(os.path.join(d, "key.pem"), "w") as f:
                    f.write("garbage\n")
                px.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: "not reloaded" in px.stderr(), "the failed reload line")
                self.assertIn("no PEM private key in the file", px.stderr())
                before = pings[0]
                wait_for(lambda: pings[0] > before + 5, "pings after the failed reload")
            finally:
                stop.set()
                t.join(30)
            self.assertEqual(errors, [])


class ExpiryGaugeTest(unittest.TestCase):
    def test_certificate_expiry_gauge(self):
        with start_stub(None) as stub, proxy(stub.address, *server_tls()) as px:
            value = wait_for(lambda: metric(px, "varanus_tls_certificate_expiry_seconds"), "the expiry gauge")
            self.assertGreater(value, 29 * 86400)
            self.assertLessEqual(value, 30 * 86400)


class InsecureWarningTest(unittest.TestCase):
    def test_insecure_upstream_logs_a_warning_and_works(self):
        with start_stub(None, "--tls-cert", cert("otherhost.pem"), "--tls-key", cert("otherhost.key")) as stub:
            with proxy(stub.address, *upstream_tls("--upstream-tls-insecure")) as px:
                self.assertIn("--upstream-tls-insecure", px.stderr())
                with client(px.address) as c:
                    self.assertEqual(c.admin.command("ping")["ok"], 1.0)


if __name__ == "__main__":
    unittest.main()
