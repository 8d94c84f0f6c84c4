#!/usr/bin/env python3
"""The relay's bounds and limits, through the real varanus executable and
varanus-stub, with raw wire messages (issue 25):

- a client that closes while its request hangs at the upstream: after
  --half-close-timeout the connection ends, the request fails with that
  reason, both descriptors are closed;
- --idle-timeout ends a connection with no traffic;
- --max-connections: one more client is closed at accept, counted, said;
- out of file descriptors (a low RLIMIT_NOFILE): accepting pauses, said
  once, and resumes when connections close; the warning at start names the
  limit;
- per-connection lines during an upstream outage are rate-limited.

    test_limits.py VARANUS_BIN STUB_BIN [unittest args]
"""
import json
import os
import re
import socket
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_harness import Proxy, open_fds  # noqa: E402  (puts ../integration on the path)
from harness import free_port, main_with_stub, wait_for  # noqa: E402
from test_wire import Wire  # noqa: E402

PROXY = STUB = STUB_ADDR = ""


def metric(admin, name):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def connect(address):
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


class LimitsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_client_gone_while_upstream_hangs(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR, "--half-close-timeout", "0.5",
                   admin=True) as proxy:
            pid = proxy.proc.pid
            baseline = open_fds(pid)
            wires = []
            for _ in range(20):
                w = Wire(proxy.address)
                # The stub answers this one after 20 s: the upstream "hangs".
                w.send_msg({"sleep": 1, "millis": 20000, "$db": "admin"})
                wires.append(w)
            wait_for(lambda: open_fds(pid) >= baseline + 40, "40 descriptors (20 x 2)")
            for w in wires:
                w.close()
            # Well before the stub would answer: each connection ends within
            # the bound (plus scheduling), not when the upstream finishes.
            closed = wait_for(lambda: len(proxy.closed_events()) == 20 and proxy.closed_events(),
                              "20 connectionClosed events", timeout=10)
            for e in closed:
                self.assertEqual(e["reason"],
                                 "client closed; the upstream did not finish within 0.5 s", e)
            failed = [e for e in proxy.events() if e["event"] == "commandFailed"]
            self.assertEqual(len(failed), 20, failed)
            for e in failed:
                self.assertEqual(e["commandName"], "sleep")
                self.assertIn("did not finish within 0.5 s", json.dumps(e))
            wait_for(lambda: open_fds(pid) <= baseline, "descriptors back to the baseline")
            self.assertEqual(metric(proxy.admin, "varanus_half_close_timeouts_total"), 20)
            self.assertEqual(metric(proxy.admin, "varanus_connections_active"), 0)

    def test_client_gone_after_its_reply_is_no_timeout(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR, "--half-close-timeout", "30",
                   admin=True) as proxy:
            w = Wire(proxy.address)
            w.send_msg({"ping": 1, "$db": "admin"})
            w.recv()
            w.close()
            # The stub closes when it sees the FIN: no bound needed.
            wait_for(lambda: proxy.closed_events(), "connectionClosed", timeout=10)
            self.assertEqual(proxy.closed_events()[0]["reason"], "client closed")
            self.assertEqual(metric(proxy.admin, "varanus_half_close_timeouts_total"), 0)

    def test_idle_timeout(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR, "--idle-timeout", "0.4", admin=True) as proxy:
            w = Wire(proxy.address)
            w.send_msg({"ping": 1, "$db": "admin"})
            w.recv()
            closed = wait_for(lambda: proxy.closed_events(), "connectionClosed", timeout=10)
            self.assertEqual(closed[0]["reason"], "idle timeout: no traffic for 0.4 s")
            self.assertEqual(w.sock.recv(1), b"")  # the client sees the close
            self.assertEqual(metric(proxy.admin, "varanus_idle_timeouts_total"), 1)
            w.close()

    def test_busy_connection_outlives_idle_timeout(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR, "--idle-timeout", "0.5", admin=True) as proxy:
            w = Wire(proxy.address)
            # 15 pings 0.1 s apart (the stub's sleep): 1.5 s of traffic with
            # no gap of 0.5 s.
            for _ in range(15):
                w.send_msg({"sleep": 1, "millis": 100, "$db": "admin"})
                w.recv()
            self.assertEqual(proxy.closed_events(), [])
            w.close()

    def test_max_connections(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR, "--max-connections", "3", admin=True) as proxy:
            kept = [Wire(proxy.address) for _ in range(3)]
            for w in kept:
                w.send_msg({"ping": 1, "$db": "admin"})
                w.recv()
            extra = connect(proxy.address)
            self.assertEqual(extra.recv(1), b"")  # closed at accept
            extra.close()
            wait_for(lambda: "refused: 3 connections open (maxConnections)" in proxy.stderr(),
                     "the refusal line")
            self.assertEqual(metric(proxy.admin, "varanus_connections_refused_total"), 1)
            # Others are unaffected, and room comes back when one closes.
            kept[0].send_msg({"ping": 1, "$db": "admin"})
            kept[0].recv()
            kept.pop().close()
            wait_for(lambda: metric(proxy.admin, "varanus_connections_active") == 2, "2 active")
            w = Wire(proxy.address)
            w.send_msg({"ping": 1, "$db": "admin"})
            w.recv()
            w.close()
            for k in kept:
                k.close()

    def test_out_of_descriptors_pauses_accept_and_recovers(self):
        # 64 open files (prlimit sets it and execs varanus): the listener,
        # epoll, sinks and the admin endpoint take some; each client two.
        proxy = Proxy(PROXY, self.tmp.name, STUB_ADDR, "--max-connections", "1000",
                      "--io-threads", "1", admin=True, prefix=("prlimit", "--nofile=64:64"))
        with proxy:
            wait_for(lambda: re.search(r"warning: maxConnections 1000 needs about 2064 open "
                                       r"files, the limit is 64", proxy.stderr()),
                     "the warning naming the limit")
            conns = []
            for _ in range(40):
                c = connect(proxy.address)
                conns.append(c)
            wait_for(lambda: "out of file descriptors" in proxy.stderr(), "the descriptor line")
            # Said once, however many clients wait.
            self.assertEqual(len(re.findall(r"accept failed", proxy.stderr())), 1, proxy.stderr())
            for c in conns:
                c.close()
            # Room again: a new client is served (one waiting in the
            # backlog may be accepted first).
            w = wait_for(lambda: self._ping(proxy.address), "a ping served again", timeout=20)
            w.close()
            wait_for(lambda: "accepting again" in proxy.stderr(), "accepting again")
            self.assertGreaterEqual(metric(proxy.admin, "varanus_descriptors_exhausted_total"), 1)

    @staticmethod
    def _ping(address):
        try:
            w = Wire(address, timeout=2)
            w.send_msg({"ping": 1, "$db": "admin"})
            w.recv()
            return w
        except OSError:
            return None

    def test_outage_lines_are_rate_limited(self):
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        with Proxy(PROXY, self.tmp.name, dead, admin=True) as proxy:
            for _ in range(60):
                c = connect(proxy.address)
                self.assertEqual(c.recv(1), b"")  # closed: upstream unreachable
                c.close()
            wait_for(lambda: metric(proxy.admin, "varanus_upstream_connect_failures_total") == 60,
                     "60 failures counted")
            lines = [l for l in proxy.stderr().splitlines() if "unreachable" in l]
            # 60 failures in well under 6 s: at most 10 lines a second.
            self.assertLess(len(lines), 60, lines)
            self.assertGreaterEqual(len(lines), 1)


if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
