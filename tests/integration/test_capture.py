#!/usr/bin/env python3
"""`varanus replay` and `varanus sniff` against the live proxy, with real drivers.

For each compressor (none, zlib, snappy, zstd) and driver (PyMongo, the Node
driver): varanus-stub, tcpdump on loopback recording both legs (driver <->
proxy, proxy <-> stub), and `varanus sniff -i lo` on the proxy's port; then
the driver's workload (compressed messages, PyMongo's exhaust cursor, the
Node driver's streaming hellos) runs through the live proxy to the stub.
Asserted: the events `varanus replay` gives for the driver's leg, and the
ones `varanus sniff` gave live, equal the proxy's own events apart from
times, durations, connection numbers and addresses, and sniff's --summary
at SIGINT counts the same commands and failures; the stub's leg, which
carries the driver's bytes unchanged (the driver talking to the stub), gives
the same events too, apart from how connections ended (a driver's reset
reaches the stub as the proxy's FIN).

Needs tcpdump and the right to capture on lo (CAP_NET_RAW: the tests run as
root); without them the test fails and says why (it never skips).

Run: VARANUS_STUB=... VARANUS_BIN=... python3 test_capture.py [-k NAME]
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Server, free_port, start_stub, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 20.0


def varanus_binary():
    path = os.environ.get("VARANUS_BIN")
    if path:
        return path
    return os.path.join(HERE, "..", "..", "build", "src", "app", "varanus")




class Recorder:
    """A process writing to files, ready once `ready` shows up in its stderr."""

    def __init__(self, argv, ready, workdir, name):
        self.name = name
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        try:
            wait_for(lambda: ready in self.stderr() or self.proc.poll() is not None, name + " to start")
        except AssertionError:
            self.proc.kill()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"{name} exited with {self.proc.returncode}: {self.stderr()}")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not stop: {self.stderr()}")
        self.out.close()
        self.err.close()
        return rc


# Keys that legitimately differ between the proxy and a capture of it.
VOLATILE = {"t", "durationMicros", "connectionId", "client", "server"}


def events_of(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def by_connection(events):
    """The events of each connection, volatile keys removed, as sorted lists.

    Why a connection closed is a matter of viewpoint: the proxy knows it
    stopped ("proxy stopped: connection idle"), a capture only sees a FIN
    ("upstream closed"). So the close reason, and the message of a network
    failure (a failure without a server error code), are left out."""
    conns = collections.OrderedDict()
    for e in events:
        conn = e.get("connectionId")
        e = {k: v for k, v in e.items() if k not in VOLATILE and k != "reason"}
        failure = e.get("failure")
        if isinstance(failure, dict) and "code" not in failure:
            e["failure"] = {"network": True}
        conns.setdefault(conn, []).append(json.dumps(e, sort_keys=True))
    return sorted(conns.values())


def same(test, got, want, who, stderr):
    """got == want, or a failure naming the first event that differs."""
    if got == want:
        return
    msg = f"{who}: {len(got)} connections, the proxy {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        for k in range(max(len(g), len(w))):
            ge = g[k] if k < len(g) else "(none)"
            we = w[k] if k < len(w) else "(none)"
            if ge != we:
                msg += f"; connection {i}, event {k}:\n  {who}: {ge[:600]}\n  proxy: {we[:600]}"
                break
        break
    test.fail(msg + "\n" + stderr[-3000:])


def pymongo_workload(uri, compressor):
    from pymongo import CursorType, MongoClient
    from pymongo.errors import OperationFailure

    kw = {"compressors": compressor} if compressor != "none" else {}
    client = MongoClient(uri, directConnection=True, serverSelectionTimeoutMS=10000, **kw)
    try:
        db = client.capture_test
        db.things.insert_many([{"_id": i, "x": i % 5, "pad": "p" * (i * 40)} for i in range(60)])
        assert len(list(db.things.find({"x": {"$gte": 0}}, batch_size=7))) == 60
        # PyMongo 3.11: a legacy OP_QUERY with the Exhaust flag, replies streamed.
        assert len(list(db.things.find({}, cursor_type=CursorType.EXHAUST, batch_size=9))) == 60
        db.things.update_one({"_id": 3}, {"$set": {"y": 1}})
        db.things.delete_many({"x": 4})
        assert db.things.count_documents({}) == 48
        try:
            db.command("noSuchCommand")
        except OperationFailure:
            pass
        db.things.drop()
    finally:
        client.close()


def node_workload(uri, compressor):
    node = shutil.which("node")
    if not node:
        raise AssertionError("node not found: install nodejs (scripts/install-deps.sh)")
    if not os.path.isdir(os.path.join(HERE, "node", "node_modules")):
        raise AssertionError("the Node driver is missing: run bash scripts/setup-node.sh")
    subprocess.run([node, os.path.join(HERE, "node", "workload.js"), uri, compressor],
                   check=True, timeout=240)


def run_variant(test, driver, compressor):
    tcpdump = shutil.which("tcpdump") or "/usr/sbin/tcpdump"
    if not os.path.exists(tcpdump):
        test.fail("tcpdump not found: install it with scripts/install-deps.sh")
    varanus = varanus_binary()
    with tempfile.TemporaryDirectory(prefix="varanus-capture-") as work, start_stub() as stub:
        stub_port = str(stub.port)
        proxy_port = str(free_port())
        pcap = os.path.join(work, "both-legs.pcap")
        # Both legs: driver <-> proxy and proxy <-> stub.
        dump = Recorder([tcpdump, "-i", "lo", "-Z", "root", "--immediate-mode", "-U", "-s", "0", "-B", "131072",
                         "-w", pcap, f"tcp port {proxy_port} or tcp port {stub_port}"],
                        "listening on", work, "tcpdump")
        test.addCleanup(dump.kill)
        # Events to a file, and the --summary (JSON) on stdout at SIGINT.
        sniff_log = os.path.join(work, "sniff.jsonl")
        sniff = Recorder([varanus, "sniff", "-i", "lo", "--port", proxy_port,
                          "--max-document-length", "0", "--log-file", sniff_log,
                          "--summary", "--json"], "capturing on", work, "sniff")
        test.addCleanup(sniff.kill)
        proxy = Server([varanus, "--listen", "127.0.0.1:" + proxy_port, "--upstream", stub.address,
                        "--max-document-length", "0", "--io-threads", "1"],
                       address_from="stderr", address_regex=r"listening on ([0-9.]+:[0-9]+)").start()
        try:
            uri = proxy.uri()
            if driver == "pymongo":
                pymongo_workload(uri, compressor)
            else:
                node_workload(uri, compressor)
        finally:
            proxy.stop()
        live = events_of("\n".join(proxy.stdout_lines()))
        closed = sum(1 for e in live if e["event"] == "connectionClosed")
        test.assertGreater(closed, 0)

        def replay(port, *extra):
            r = subprocess.run([varanus, "replay", "--port", port, "--max-document-length", "0",
                                *extra, pcap], capture_output=True, text=True, timeout=120)
            return r, events_of(r.stdout)

        def recorded_closes(port):
            return sum(1 for e in replay(port, "--quiet")[1]
                       if e["event"] == "connectionClosed" and e["reason"] != "end of capture")

        # Every connection's last packets reached sniff (it writes events as
        # it goes) and tcpdump's file (-U: written packet by packet).
        def sniffed_text():
            if not os.path.exists(sniff_log):
                return ""
            with open(sniff_log, encoding="utf-8", errors="replace") as f:
                return f.read()

        wait_for(lambda: sniffed_text().count('"connectionClosed"') >= closed,
                 "sniff to see every connection close")
        wait_for(lambda: recorded_closes(proxy_port) >= closed and
                 recorded_closes(stub_port) >= closed, "tcpdump to record every connection close")
        rc_sniff = sniff.stop(signal.SIGINT)
        rc_dump = dump.stop(signal.SIGINT)
        test.assertEqual(rc_dump, 0, dump.stderr())
        # A full kernel buffer would lose packets: then the comparison says nothing.
        test.assertIn("\n0 packets dropped by kernel", dump.stderr())
        test.assertEqual(rc_sniff, 0, sniff.stderr())

        if os.environ.get("VARANUS_KEEP_CAPTURES"):  # for a look with tcpdump/wireshark
            shutil.copy(pcap, os.path.join(os.environ["VARANUS_KEEP_CAPTURES"],
                                           f"{driver}-{compressor}-{proxy_port}-{stub_port}.pcap"))
        started = [e for e in live if e["event"] == "commandStarted"]
        test.assertGreater(len(started), 10)
        if compressor != "none":
            test.assertTrue(any(e.get("compressor") == compressor for e in started),
                            "no compressed command in the proxy's events")
        test.assertTrue(any(e.get("exhaust") for e in live), "no exhaust reply in the workload")
        want = by_connection(live)
        # The driver's leg, replayed and sniffed: the proxy's events exactly.
        r, replayed = replay(proxy_port)
        test.assertEqual(r.returncode, 0, r.stderr)
        same(test, by_connection(replayed), want, "replay", r.stderr)
        same(test, by_connection(events_of(sniffed_text())), want, "sniff", sniff.stderr())
        test.assertIn(" 0 dropped,", sniff.stderr())
        # sniff's summary at SIGINT counts what the proxy saw.
        summary = json.loads(sniff.stdout())
        want_counts = collections.Counter(e["commandName"] for e in live
                                          if e["event"] in ("commandSucceeded", "commandFailed"))
        want_failed = collections.Counter(e["commandName"] for e in live
                                          if e["event"] == "commandFailed")
        test.assertEqual({r["name"]: r["count"] for r in summary["commands"]}, dict(want_counts))
        test.assertEqual({r["name"]: r["failures"] for r in summary["commands"] if r["failures"]},
                         dict(want_failed))
        # The stub's leg carries the driver's bytes unchanged, so the same
        # events; only how each connection ended may differ (a driver's RST
        # reaches the stub as the proxy's FIN).
        r, stub_leg = replay(stub_port)
        test.assertEqual(r.returncode, 0, r.stderr)
        same(test, by_connection(stub_leg),
             by_connection(live), "replay of the stub leg", r.stderr)
        print(f"\n{driver}/{compressor}: {len(live)} events on {len(want)} connections "
              f"({len(started)} commands): replay of both legs and sniff give the same",
              file=sys.stderr)


class CaptureTest(unittest.TestCase):
    pass


def _make(driver, compressor):
    def test(self):
        run_variant(self, driver, compressor)

    test.__name__ = f"test_{driver}_{compressor}"
    return test


for _driver in ("pymongo", "node"):
    for _compressor in ("none", "zlib", "snappy", "zstd"):
        setattr(CaptureTest, f"test_{_driver}_{_compressor}", _make(_driver, _compressor))


if __name__ == "__main__":
    unittest.main()
