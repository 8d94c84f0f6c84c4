#!/usr/bin/env python3
"""The admin endpoint's /metrics as Prometheus users see it: a real
Prometheus (Debian's `prometheus` package) scrapes varanus while PyMongo
runs a workload through it, and the series read back through Prometheus's
HTTP API (/api/v1/query) agree with the event log of the same run;
`promtool check metrics` on a scrape reports nothing; every metric the
program declares moves under a workload that should move it.

    test_prometheus.py VARANUS_BIN STUB_BIN [unittest args]
"""
import collections
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, main_with_stub, wait_for, free_port, start_stub  # noqa: E402
from test_otlp_proxy import Receiver  # noqa: E402

import bson  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from pymongo.errors import OperationFailure, PyMongoError  # noqa: E402

PROXY = STUB = STUB_ADDR = ""
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Commands of the workload that varanus labels by name (others are "other").
KNOWN = {"insert", "find", "update", "delete", "ping", "endSessions", "getMore", "aggregate"}




def proxy(args, name="proxy"):
    return Server([PROXY, "--listen", "127.0.0.1:0", *args], name=name,
                  address_from="stderr", address_regex=r"listening on ([^\s,]+)")


def admin_of(server):
    m = wait_for(lambda: re.search(r"admin endpoint on (?:http://)?(\S+)", server.stderr()),
                 "the admin endpoint line", timeout=10)
    return m.group(1)


def scrape(admin):
    return urllib.request.urlopen(f"http://{admin}/metrics").read().decode()


def samples(text):
    """{series: value} of a scrape, and the declared families {name: type}."""
    out, families = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            families[name] = kind
        elif line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out, families


def family_of(series):
    name = series.split("{", 1)[0]
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.startswith("varanus_command_duration_seconds"):
            return "varanus_command_duration_seconds"
    return name


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def workload(uri, inserts=6, finds=4):
    client = MongoClient(uri, appname="prom-test")
    coll = client.test.items
    for i in range(inserts):
        coll.insert_one({"i": i})
    for _ in range(finds):
        list(coll.find({"i": {"$gte": 0}}))
    try:
        client.test.command("noSuchCommandHere")
    except OperationFailure:
        pass
    client.close()


class Prometheus:
    def __init__(self, tmp, target, interval="500ms"):
        self.port = free_port()
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: {interval}
scrape_configs:
  - job_name: varanus
    static_configs:
      - targets: ["{target}"]
""")
        self.log = open(os.path.join(tmp, "prometheus.log"), "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self.ready, "prometheus to be ready", timeout=60)

    def ready(self):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                          timeout=1).status == 200
        except OSError:
            return False

    def query(self, q):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["status"] == "success", body
        return {tuple(sorted(r["metric"].items())): float(r["value"][1])
                for r in body["data"]["result"]}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


class PrometheusScrape(unittest.TestCase):
    def test_prometheus_series_agree_with_the_event_log(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "events.log")
            with proxy(["--upstream", STUB_ADDR, "--admin", "127.0.0.1:0", "--log-file", log]) as px:
                admin = admin_of(px)
                prom = Prometheus(tmp, admin)
                try:
                    # Prometheus has the target up before the workload starts.
                    wait_for(lambda: prom.query('up{job="varanus"}').get(
                        (("__name__", "up"), ("instance", admin), ("job", "varanus"))) == 1.0
                        or None, what="the target up")
                    workload(px.uri(directConnection="true"))
                    # The event log is complete once every connection the
                    # client opened is closed: no event can follow.
                    def complete():
                        l = read_lines(log)
                        opened = sum(1 for x in l if x["event"] == "connectionOpened")
                        closed = sum(1 for x in l if x["event"] == "connectionClosed")
                        return l if opened >= 2 and closed == opened else None
                    lines = wait_for(complete, what="the event log")
                    published = len(lines)
                    wait_for(lambda: list(prom.query("varanus_events_published_total").values())
                             == [float(published)],
                             what=f"varanus_events_published_total == {published}")
                    commands = prom.query("varanus_commands_total")
                    durations = prom.query("sum(varanus_command_duration_seconds_count)")
                    frames = prom.query("varanus_frames_total")
                    conns = prom.query("varanus_connections_total")
                    build = prom.query("varanus_build_info")
                    up = prom.query("varanus_upstream_up")
                    rss = prom.query("process_resident_memory_bytes")
                finally:
                    prom_log = prom.stop()
            expected = collections.Counter()
            for l in lines:
                if l["event"] in ("commandSucceeded", "commandFailed") and "hello" not in l:
                    label = l["commandName"] if l["commandName"] in KNOWN else "other"
                    outcome = "failed" if l["event"] == "commandFailed" else "succeeded"
                    expected[(label, l["databaseName"], outcome)] += 1
            got = {(dict(k)["command"], dict(k)["database"], dict(k)["outcome"]): v
                   for k, v in commands.items()}
            self.assertEqual(got, {k: float(v) for k, v in expected.items()}, prom_log[-2000:])
            self.assertEqual(list(durations.values()), [float(sum(expected.values()))])
            # Every request and every reply is a frame: each command started
            # (hellos included) and each reply (not the network failures of
            # heartbeats pending at close), as the event log counts them.
            started = sum(1 for l in lines if l["event"] == "commandStarted")
            replies = sum(1 for l in lines if l["event"] == "commandSucceeded" or (
                l["event"] == "commandFailed" and set(l["failure"]) != {"message"}))
            self.assertEqual(list(frames.values()), [float(started + replies)])
            self.assertEqual(list(conns.values()),
                             [float(sum(1 for l in lines if l["event"] == "connectionOpened"))])
            self.assertEqual(len(build), 1)
            self.assertRegex(dict(list(build)[0])["version"], r"^\d+\.\d+\.\d+")
            self.assertEqual(list(up.values()), [1.0])
            self.assertGreater(list(rss.values())[0], 1e6)

    def test_promtool_check_metrics_reports_nothing(self):
        rx = Receiver()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = os.path.join(tmp, "c.json")
                with open(cfg, "w") as f:
                    json.dump({"sinks": {"admin": {"listen": "127.0.0.1:0"}, "outputs": [
                        {"type": "file", "path": os.path.join(tmp, "e.log")},
                        {"type": "otlp", "endpoint": rx.url}]}}, f)
                with proxy(["--upstream", STUB_ADDR, "--config", cfg]) as px:
                    workload(px.uri(directConnection="true"))
                    text = scrape(admin_of(px))
            r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True)
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), text)
            for line in text.splitlines():  # floats in their shortest form
                value = line.rpartition(" ")[2]
                if not line.startswith("#") and "." in value:
                    self.assertEqual(value, repr(float(value)), line)
        finally:
            rx.stop()

    def test_hostile_database_names_keep_every_scrape_valid(self):
        """`$db: "\\xff\\xfe"` and control bytes: promtool accepts the scrape and a
        real Prometheus keeps scraping (up stays 1, later commands counted)."""
        def raw_command(sock, request_id, db):
            body = b"\x10ping\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + \
                struct.pack("<i", len(db) + 1) + db + b"\x00"
            doc = struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"
            sock.sendall(struct.pack("<iiiiI", 21 + len(doc), request_id, 0, 2013, 0)
                         + b"\x00" + doc)
            sock.settimeout(5)
            header = b""
            while len(header) < 16:
                chunk = sock.recv(16 - len(header))
                self.assertTrue(chunk, "the connection closed before the reply")
                header += chunk
            rest = struct.unpack("<i", header[:4])[0] - 16
            while rest > 0:
                chunk = sock.recv(rest)
                self.assertTrue(chunk)
                rest -= len(chunk)

        with tempfile.TemporaryDirectory() as tmp:
            with proxy(["--upstream", STUB_ADDR, "--admin", "127.0.0.1:0"]) as px:
                admin = admin_of(px)
                prom = Prometheus(tmp, admin)
                try:
                    wait_for(lambda: prom.query('up{job="varanus"}').get(
                        (("__name__", "up"), ("instance", admin), ("job", "varanus"))) == 1.0
                        or None, what="the target up")
                    host, port = px.address.rsplit(":", 1)
                    with socket.create_connection((host, int(port))) as raw:
                        for i, db in enumerate([b"\xff\xfe", b"a\x01b\x7f\r", b'q"\\\n']):
                            raw_command(raw, 10 + i, db)
                    text = wait_for(lambda: (lambda t: t if "\ufffd\ufffd" in t else None)(
                        urllib.request.urlopen(f"http://{admin}/metrics").read().decode(
                            "utf-8")), what="the hostile label in /metrics")
                    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                                       capture_output=True, text=True)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                    # Prometheus keeps scraping: a later ping is counted, the
                    # replaced label is queryable.
                    MongoClient(px.uri(directConnection="true")).admin.command("ping")
                    wait_for(lambda: prom.query(
                        'varanus_commands_total{command="ping",database="admin"}') or None,
                        what="a later ping counted by Prometheus")
                    # (PromQL's lexer refuses U+FFFD in a literal: filter here.)
                    got = [v for k, v in prom.query("varanus_commands_total").items()
                           if dict(k).get("database") == "\ufffd\ufffd"]
                    self.assertEqual(got, [1.0])
                    self.assertEqual(list(prom.query('up{job="varanus"}').values()), [1.0])
                finally:
                    prom_log = prom.stop()
                self.assertNotIn("invalid", prom_log.lower(), prom_log[-2000:])

    def test_every_declared_metric_moves(self):
        """Scrapes before and after workloads meant to move each metric."""
        # Constant by nature: checked for presence and value instead.
        constant = {"varanus_build_info", "varanus_event_queue_capacity", "process_max_fds",
                    "process_start_time_seconds", "process_virtual_memory_bytes"}
        # Moves only while the ring holds events / the exporter lags: sampled
        # during a burst below, but a fast sink thread may always find it empty.
        transient = {"varanus_event_queue_depth", "varanus_otlp_queue_spans"}
        # Needs every core busy for a tick (the SCHED_IDLE sink thread starved):
        # tests/sinks/dispatcher_test.cpp drives the rescuer directly.
        untestable = {"varanus_sink_rescues_total"}
        # Driven through the real binary, with their values asserted from
        # /metrics, by the tests named: they need set-ups of their own
        # (timeouts, a low descriptor limit, certificates).
        elsewhere = {
            "varanus_half_close_timeouts_total",  # tests/proxy/test_limits.py
            "varanus_idle_timeouts_total",  # tests/proxy/test_limits.py
            "varanus_descriptors_exhausted_total",  # tests/proxy/test_limits.py
            "varanus_connections_refused_total",  # tests/proxy/test_limits.py
            "varanus_tls_handshake_failures_total",  # tests/integration/test_tls.py
            "varanus_client_tls_at_plaintext_listener_total",  # tests/integration/test_tls.py
            "varanus_pending_overflows_total",  # tests/proxy/test_hostile.py
            # A replica-set upstream: tests/integration/test_replset.py, test_mongos.py
            "varanus_hello_rewrites_total",
            # tests/monitor/tracker_test.cpp (a budget of bytes a second: no
            # real workload reaches the default)
            "varanus_uninspected_compressed_frames_total",
        }
        # 503 twice (retries, failed posts), then 0.2 s per answer: the
        # 400 pings' spans overflow an export queue of 4 (spans dropped).
        rx = Receiver(fail_first=2, slow=0.2)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = os.path.join(tmp, "c.json")
                with open(cfg, "w") as f:
                    json.dump({"sinks": {"queueSize": 8, "admin": {"listen": "127.0.0.1:0"},
                                         "outputs": [
                        {"type": "file", "path": os.path.join(tmp, "e.log"),
                         "filter": {"excludeCommands": ["ping"]}},
                        # Every write fails (ENOSPC): sink errors.
                        {"type": "file", "path": "/dev/full"},
                        {"type": "otlp", "endpoint": rx.url, "maxQueueSpans": 4,
                         "maxBatchSpans": 2, "batchDelaySeconds": 0.01,
                         "minBackoffSeconds": 0.01}]}}, f)
                with proxy(["--upstream", STUB_ADDR, "--config", cfg, "--max-message-size",
                            "2000000", "--max-document-length", "10"]) as px:
                    admin = admin_of(px)
                    before, families = samples(scrape(admin))
                    client = MongoClient(px.uri(directConnection="true"), appname="moves")
                    during = {}
                    # Commands, failures, frames, bytes, events; pings under load
                    # for busy polling; a burst into a queue of 8 for drops.
                    workload(px.uri(directConnection="true"))
                    for _ in range(400):
                        client.admin.command("ping")
                    for s, v in samples(scrape(admin))[0].items():
                        during[s] = v  # connections_active with the client open
                    # A 300 KB document: inspected sparsely (over 4 x 64 KiB).
                    client.test.big.insert_one({"pad": "x" * 300_000})
                    # A 3 MB document: over --max-message-size, relayed uninspected.
                    c2 = MongoClient(px.uri(directConnection="true"))
                    try:
                        c2.test.big.insert_one({"pad": "y" * 3_000_000})
                    except PyMongoError:
                        pass
                    c2.close()
                    # 64 pings in one write: the tracker publishes 64 events at
                    # once into a queue of 8, faster than any sink thread drains.
                    host, port = px.address.rsplit(":", 1)
                    with socket.create_connection((host, int(port))) as raw:
                        ping = bson.encode({"ping": 1, "$db": "admin"})
                        msgs = b"".join(struct.pack("<iiiiI", 21 + len(ping), 100 + i, 0, 2013, 0)
                                        + b"\x00" + ping for i in range(64))
                        raw.sendall(msgs)
                        raw.settimeout(5)
                        got = b""
                        while got.count(b"ok") < 64:
                            chunk = raw.recv(65536)
                            if not chunk:
                                break
                            got += chunk
                    # Bytes that are not MongoDB: a decode error.
                    host, port = px.address.rsplit(":", 1)
                    with socket.create_connection((host, int(port))) as raw:
                        body = b"\x00\x00\x00\x00" + b"\x00" + struct.pack("<i", 200) + b"\x01"
                        raw.sendall(struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body)
                        raw.settimeout(2)
                        try:
                            raw.recv(100)
                        except OSError:
                            pass
                    client.close()
                    wait_for(lambda: samples(scrape(admin))[0].get(
                        "varanus_decode_errors_total", 0) >= 1, what="the decode error")
                    wait_for(lambda: samples(scrape(admin))[0].get(
                        f'varanus_otlp_spans_sent_total{{sink="otlp:{rx.url}"}}', 0) >= 1,
                        what="spans sent after the 503s")
                    after, _ = samples(scrape(admin))
                # An upstream that is down: connect failures, upstream_up 0.
                dead = free_port()
                with proxy(["--upstream", f"127.0.0.1:{dead}", "--admin", "127.0.0.1:0",
                            "--connect-timeout", "1"]) as px2:
                    admin2 = admin_of(px2)
                    try:
                        MongoClient(px2.uri(directConnection="true"),
                                    serverSelectionTimeoutMS=500).admin.command("ping")
                    except PyMongoError:
                        pass
                    dead_after = wait_for(lambda: (lambda s: s if s.get(
                        "varanus_upstream_connect_failures_total", 0) >= 1 else None)(
                        samples(scrape(admin2))[0]), what="a connect failure")
        finally:
            rx.stop()
        after.update({k: v for k, v in dead_after.items() if k.startswith("varanus_upstream")})
        before.update({"varanus_upstream_up": 1.0})  # what proxy 1 had: 0 now is a move
        moved = {family_of(s) for s in set(before) | set(after) | set(during)
                 if after.get(s, during.get(s)) != before.get(s)}
        moved |= {family_of(s) for s in during if during[s] != before.get(s)}
        declared = set(families)
        self.assertIn("varanus_frames_total", declared)
        not_moved = declared - moved - constant - transient - untestable - elsewhere
        self.assertEqual(not_moved, set(), {n: after.get(n) for n in not_moved})
        for name in constant:
            self.assertTrue(any(family_of(s) == name and v > 0 for s, v in after.items()), name)




if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
