#!/usr/bin/env python3
"""Every sink through the real proxy with a real driver (PyMongo) against
varanus-stub: file contents parsed and counted against the driver's own
command monitoring, both formats, filters, `values` redaction, UDP,
/metrics scraped, rotation and SIGHUP reopen, and a TCP collector that
stops reading (the driver's latency unchanged, drops counted) and comes
back (events flow again); messages of 5-25 MB relayed intact with the right
events, inspected sparsely (peak RSS, varanus_sparse_frames_total).

    test_sinks_proxy.py VARANUS_BIN STUB_BIN [unittest args]

VARANUS_BIN is the varanus executable: --listen, --upstream, --config FILE
(here {"sinks": ...}), --log-file, --log-format; it announces "listening
on H:P" and "admin endpoint on http://H:P" on stderr.
"""
import collections
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, main_with_stub, wait_for, start_stub  # noqa: E402

from pymongo import MongoClient, monitoring  # noqa: E402
from pymongo.errors import OperationFailure  # noqa: E402

PROXY = STUB = ""
SECRET = "secret-value-7f3a"


class Recorder(monitoring.CommandListener):
    def __init__(self):
        self.names = collections.Counter()
        self.failures = 0

    def started(self, event):
        self.names[event.command_name] += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        self.failures += 1


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def workload(uri, inserts=5, finds=3, fail=True, app="sinks-test"):
    rec = Recorder()
    client = MongoClient(uri, appname=app, event_listeners=[rec])
    coll = client.test.people
    for i in range(inserts):
        coll.insert_one({"name": f"person {i}", "email": f"{SECRET}-{i}@example.com", "age": 40 + i})
    for _ in range(finds):
        list(coll.find({"age": {"$gte": 40}}))
    if fail:
        try:
            client.test.command("noSuchCommandHere")
        except OperationFailure:
            pass
    client.close()
    return rec


def proxy(args, tmp, sinks=None):
    argv = [PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR]
    if sinks is not None:
        cfg = os.path.join(tmp, "sinks.json")
        with open(cfg, "w") as f:
            json.dump({"sinks": sinks}, f)
        argv += ["--config", cfg]
    return Server(argv + args, name="proxy", address_from="stderr",
                  address_regex=r"listening on ([^\s,]+)")


def admin_of(server):
    """The admin endpoint's address from the start-up lines."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = re.search(r"admin endpoint on (?:http://)?(\S+)", server.stderr())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError("no admin endpoint line:\n" + server.stderr())


def commands_of(lines):
    """Per-command counts of started events, handshake/heartbeat hellos excluded."""
    return collections.Counter(l["commandName"] for l in lines
                               if l["event"] == "commandStarted" and "hello" not in l)


class SinksThroughProxy(unittest.TestCase):
    def test_files_formats_filters_redaction_udp_metrics(self):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.2)
        with tempfile.TemporaryDirectory() as tmp:
            p = lambda name: os.path.join(tmp, name)  # noqa: E731
            sinks = {"admin": {"listen": "127.0.0.1:0"}, "outputs": [
                {"type": "file", "path": p("all.log")},
                {"type": "file", "path": p("mlog.log"), "format": "mongodb-log"},
                {"type": "file", "path": p("failed.log"), "filter": {"failedOnly": True}},
                {"type": "file", "path": p("finds.log"),
                 "filter": {"includeCommands": ["find"], "keepHellos": False,
                            "connectionEvents": False}},
                {"type": "file", "path": p("slow.log"), "filter": {"minDurationMicros": 60000000}},
                {"type": "file", "path": p("redacted.log"), "redaction": "values"},
                {"type": "udp", "address": "127.0.0.1:%d" % udp.getsockname()[1]},
            ]}
            with proxy([], tmp, sinks) as px:
                rec = workload(px.uri(directConnection="true"))
                admin = admin_of(px)
                time.sleep(0.5)  # the sink thread feeds the metrics
                metrics = urllib.request.urlopen(f"http://{admin}/metrics").read().decode()
                health = urllib.request.urlopen(f"http://{admin}/healthz").read().decode()
                stats = json.loads(urllib.request.urlopen(f"http://{admin}/stats").read())
            datagrams = []
            try:
                while True:
                    datagrams.append(json.loads(udp.recv(65536)))
            except socket.timeout:
                pass
            udp.close()

            everything = read_lines(p("all.log"))
            ours = commands_of(everything)
            # Every command the driver published, once (varanus sees more: hellos).
            for name, n in rec.names.items():
                self.assertEqual(ours[name], n, (name, ours, rec.names))
            # Heartbeat hellos pending when the driver closes fail as network
            # errors; the driver does not publish those.
            self.assertEqual(sum(1 for l in everything
                                 if l["event"] == "commandFailed" and "hello" not in l),
                             rec.failures, [l for l in everything if l["event"] == "commandFailed"])
            self.assertTrue(any(l["event"] == "connectionOpened" for l in everything))
            self.assertTrue(all(l.get("appName") == "sinks-test"
                                for l in everything if l["event"] == "commandStarted"
                                and l.get("hello") != "handshake"))

            mlog = read_lines(p("mlog.log"))
            # The logging spec publishes no handshake or heartbeat hellos.
            self.assertEqual(sum(1 for l in mlog if l["message"] == "Command started"),
                             sum(1 for l in everything
                                 if l["event"] == "commandStarted" and "hello" not in l))
            self.assertFalse(any(l.get("commandName") in ("hello", "isMaster", "ismaster")
                                 for l in mlog))
            self.assertFalse(any("operationId" in l for l in mlog))
            self.assertTrue(all(isinstance(l["command"], str)
                                for l in mlog if l["message"] == "Command started"))
            self.assertTrue(all(isinstance(l["durationMS"], (int, float))
                                for l in mlog if l["message"] == "Command succeeded"))

            failed = [l for l in read_lines(p("failed.log")) if "hello" not in l]
            self.assertEqual(len(failed), rec.failures)
            self.assertTrue(all(l["event"] == "commandFailed" for l in failed))
            self.assertEqual(failed[0]["failure"]["codeName"], "CommandNotFound")

            finds = read_lines(p("finds.log"))
            self.assertEqual(collections.Counter(l["commandName"] for l in finds),
                             {"find": 2 * rec.names["find"]})
            self.assertEqual(read_lines(p("slow.log")), [])

            with open(p("redacted.log")) as f:
                redacted = f.read()
            self.assertNotIn(SECRET, redacted)
            self.assertNotIn("person 1", redacted)
            self.assertIn('"email":"string"', redacted)
            with open(p("all.log")) as f:
                self.assertIn(SECRET, f.read())  # the unredacted sink has the values

            self.assertEqual(len(datagrams), len(everything))

            self.assertIn('varanus_commands_total{command="insert",database="test",'
                          f'outcome="succeeded"}} {rec.names["insert"]}', metrics)
            self.assertIn('varanus_commands_total{command="other",database="test",'
                          'outcome="failed"} 1', metrics)
            self.assertIn("varanus_command_duration_seconds_bucket{command=\"find\"", metrics)
            self.assertIn("varanus_hellos_total{kind=\"handshake\"", metrics)
            self.assertTrue(health.startswith("ok: upstream"), health)
            self.assertEqual({s["name"] for s in stats["sinks"]} >= {"file:" + p("all.log")}, True)

    def test_log_file_flag_rotation_and_sighup(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "events.log")
            sinks = {"outputs": [{"type": "file", "path": os.path.join(tmp, "rot.log"),
                                  "rotateBytes": 4000, "keepFiles": 2}]}
            with proxy(["--log-file", log, "--log-format", "mongodb-log"], tmp, sinks) as px:
                workload(px.uri(directConnection="true"), inserts=20, fail=False)
                time.sleep(0.3)
                os.rename(log, log + ".old")  # logrotate moves the file...
                px.proc.send_signal(signal.SIGHUP)  # ...and signals
                time.sleep(0.5)
                workload(px.uri(directConnection="true"), inserts=2, finds=0, fail=False,
                         app="after-hup")
            old, new = read_lines(log + ".old"), read_lines(log)
            self.assertTrue(old and new)
            self.assertTrue(all(l.get("message") for l in new))  # mongodb-log format
            self.assertTrue(any("insert" == l.get("commandName") for l in new))
            self.assertFalse(any(l.get("commandName") == "insert" and "after-hup" in json.dumps(l)
                                 for l in old))
            rotated = sorted(f for f in os.listdir(tmp) if f.startswith("rot.log"))
            self.assertEqual(rotated, ["rot.log", "rot.log.1", "rot.log.2"])
            for f in rotated:
                self.assertLessEqual(os.path.getsize(os.path.join(tmp, f)), 4000)
                read_lines(os.path.join(tmp, f))  # whole lines only

    def test_plugin_sink(self):
        plugin = os.environ.get("VARANUS_EXAMPLE_PLUGIN")
        if not plugin:
            self.skipTest("VARANUS_EXAMPLE_PLUGIN not set")
        with tempfile.TemporaryDirectory() as tmp:
            counts = os.path.join(tmp, "counts.json")
            sinks = {"outputs": [{"type": "plugin", "path": plugin, "config": {"output": counts}},
                                 {"type": "file", "path": os.path.join(tmp, "all.log")}]}
            with proxy([], tmp, sinks) as px:
                workload(px.uri(directConnection="true"), inserts=4, finds=0, fail=False,
                         app="plugin-app")
            with open(counts) as f:
                got = json.load(f)
            self.assertIn(got.get("plugin-app"), (4, 5), got)  # + endSessions

    def test_large_messages_relayed_whole_inspected_sparsely(self):
        """A 25 MB insert, 15 + 10 MB of find/getMore batches and a 5 MB
        failing command: relayed byte for byte, their events right (ok read
        past megabytes of documents), inspected without buffering them."""
        def hwm_kib(pid):
            with open(f"/proc/{pid}/status") as f:
                return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))

        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "events.log")
            sinks = {"admin": {"listen": "127.0.0.1:0"}, "outputs": []}
            with proxy(["--log-file", log], tmp, sinks) as px:
                client = MongoClient(px.uri(directConnection="true"), appname="big-test")
                client.admin.command("ping")
                before = hwm_kib(px.proc.pid)
                docs = [{"_id": i, "blob": os.urandom(4 << 20), "text": "é" * (500 << 10)}
                        for i in range(5)]  # ~5 MB each: one 25 MB insert message
                client.test.big.insert_many(docs)
                back = list(client.test.big.find().sort("_id", 1))
                with self.assertRaises(OperationFailure) as failure:
                    client.test.command("noSuchCommandHere", 1, pad=os.urandom(5 << 20))
                self.assertEqual(failure.exception.code, 59)
                client.close()
                grown = hwm_kib(px.proc.pid) - before
                metrics = urllib.request.urlopen(f"http://{admin_of(px)}/metrics").read().decode()
            self.assertEqual(back, docs)  # every byte relayed unchanged
            # Without sparse inspection the 25 MB message alone was held whole.
            self.assertLess(grown, 8 << 10, f"peak RSS grew by {grown} KiB")
            # The insert, the find and getMore replies, the failing command.
            self.assertIn("varanus_sparse_frames_total 4\n", metrics)
            self.assertIn("varanus_decode_errors_total 0\n", metrics)
            self.assertNotIn("inspection stopped", px.stderr())

            lines = [l for l in read_lines(log) if l.get("appName") == "big-test"
                     and l["event"].startswith("command") and "hello" not in l]
            by = collections.defaultdict(list)
            for l in lines:
                by[(l["commandName"], l["event"])].append(l)
            insert = by[("insert", "commandStarted")][0]
            self.assertEqual(insert["command"]["insert"], "big")
            self.assertEqual(insert["command"]["documents"][0]["_id"], 0)
            self.assertIs(insert["commandTruncated"], True)
            self.assertEqual(by[("insert", "commandSucceeded")][0]["reply"]["n"], 5)
            self.assertEqual(len(by[("find", "commandSucceeded")]), 1)
            self.assertEqual(len(by[("getMore", "commandSucceeded")]), 1)
            found = by[("find", "commandSucceeded")][0]
            self.assertEqual(found["reply"]["cursor"]["firstBatch"][0]["_id"], 0)
            self.assertIs(found["replyTruncated"], True)
            self.assertGreater(found["durationMicros"], 0)
            failed = by[("noSuchCommandHere", "commandFailed")]
            self.assertEqual(len(failed), 1, lines)
            self.assertEqual(failed[0]["failure"]["codeName"], "CommandNotFound")
            self.assertEqual(by[("noSuchCommandHere", "commandSucceeded")], [])

    def test_tcp_collector_stops_reading_then_comes_back(self):
        collector = socket.socket()
        collector.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        collector.bind(("127.0.0.1", 0))
        collector.listen(1)
        port = collector.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            sinks = {"admin": {"listen": "127.0.0.1:0"}, "outputs": [
                {"type": "tcp", "address": f"127.0.0.1:{port}", "maxBufferBytes": 65536,
                 "maxDocumentLength": 0}]}
            with proxy([], tmp, sinks) as px:
                conn, _ = collector.accept()  # ...and never reads
                client = MongoClient(px.uri(directConnection="true"))
                big = "x" * 20000

                def timed(n):
                    t0 = time.monotonic()
                    for i in range(n):
                        client.test.big.insert_one({"i": i, "pad": big})
                    return (time.monotonic() - t0) / n

                first = timed(50)
                stalled = timed(300)  # ~6 MB of lines into a collector that reads nothing
                time.sleep(0.5)
                stats = json.loads(urllib.request.urlopen(f"http://{admin_of(px)}/stats").read())
                tcp = [s for s in stats["sinks"] if s["name"].startswith("tcp:")][0]
                self.assertGreater(tcp["dropped"], 0, stats)
                # The driver did not wait for the collector. (Generous: 2-core CI
                # machines run the sink thread, the proxy and the driver at once;
                # waiting on the collector would cost seconds, not milliseconds.)
                print(f"insert latency: collector reading {first * 1e3:.2f} ms, "
                      f"not reading {stalled * 1e3:.2f} ms, dropped {tcp['dropped']}")
                self.assertLess(stalled, max(4 * first, first + 0.02), (first, stalled))

                # The collector reads again: new events arrive.
                conn.settimeout(0.5)
                got = b""
                deadline = time.monotonic() + 20
                marker = b"back-again-marker"
                while marker not in got and time.monotonic() < deadline:
                    client.test.command("ping", comment="back-again-marker")
                    try:
                        while True:
                            chunk = conn.recv(1 << 20)
                            if not chunk:
                                break
                            got += chunk
                            if marker in got:
                                break
                    except socket.timeout:
                        pass
                    got = got[-(1 << 20):]
                self.assertIn(marker, got)
                client.close()
                conn.close()
        collector.close()




STUB_ADDR = ""

if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
