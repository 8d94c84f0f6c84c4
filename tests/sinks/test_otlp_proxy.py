#!/usr/bin/env python3
"""OTLP trace export through the real proxy: PyMongo (Debian's python3)
talks to varanus-stub through varanus, an OTLP/HTTP receiver (a small HTTP
server in this file) gets the spans, and they are compared with the event
log of the same run: one span per command, attributes from the OpenTelemetry
MongoDB conventions, durations equal to durationMicros, the failed command's
status, a traceparent in `comment` continued, the JSON shaped as the OTLP
JSON encoding requires. Then a receiver that answers 503 before it recovers
(retried, nothing lost) and one that never answers (the driver's latency
unchanged, drops counted), and an endpoint that is down at start.

    test_otlp_proxy.py VARANUS_BIN STUB_BIN [unittest args]
"""
import gzip
import http.server
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, main_with_stub, wait_for, start_stub  # noqa: E402

from pymongo import MongoClient  # noqa: E402
from pymongo.errors import OperationFailure  # noqa: E402

PROXY = STUB = STUB_ADDR = ""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACE_ID2 = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID2 = "b7ad6b7169203331"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
DIGITS = re.compile(r"^[0-9]+$")




class Receiver:
    """An OTLP/HTTP receiver: POST /v1/traces, JSON (gzip or not).
    `fail_first`: answer that many requests with 503 first.
    `hang`: never answer (hold every request until stop()).
    `slow`: seconds each answer takes (a collector that lags)."""

    def __init__(self, fail_first=0, hang=False, slow=0.0):
        self.requests = []  # (headers dict, parsed body)
        self.statuses = []
        self.fail_first = fail_first
        self.hang = hang
        self.slow = slow
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.hang:
                    receiver.release.wait(60)
                    return
                if receiver.slow:
                    receiver.release.wait(receiver.slow)
                with receiver.lock:
                    failing = len(receiver.statuses) < receiver.fail_first
                    status = 503 if failing else 200
                    receiver.statuses.append(status)
                    if not failing:
                        if self.headers.get("Content-Encoding") == "gzip":
                            body = gzip.decompress(body)
                        receiver.requests.append((
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(body), self.path))
                answer = b"{}" if status == 200 else b"busy"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def spans(self):
        with self.lock:
            out = []
            for _, body, _ in self.requests:
                for rs in body["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        out.extend(ss["spans"])
            return out

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def attrs(span):
    out = {}
    for a in span["attributes"]:
        (kind, value), = a["value"].items()
        out[a["key"]] = value
    return out


def proxy(tmp, outputs, admin=True):
    cfg = os.path.join(tmp, "config.json")
    sinks = {"outputs": outputs}
    if admin:
        sinks["admin"] = {"listen": "127.0.0.1:0"}
    with open(cfg, "w") as f:
        json.dump({"sinks": sinks}, f)
    return Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR, "--config", cfg],
                  name="proxy", address_from="stderr", address_regex=r"listening on ([^\s,]+)")


def admin_of(server):
    m = wait_for(lambda: re.search(r"admin endpoint on (?:http://)?(\S+)", server.stderr()),
                 "the admin endpoint line", timeout=10)
    return m.group(1)


def metric(admin, name, sink=None):
    text = urllib.request.urlopen(f"http://{admin}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or (sink is not None and key == f'{name}{{sink="{sink}"}}'):
            return float(value)
    return None


def read_lines(path):
    with open(path) as f:  # a line still being written is left for the next look
        return [json.loads(line) for line in f if line.endswith("\n")]


def complete_log(path):
    """The event log once every connection opened is closed: no event can follow."""
    def complete():
        lines = read_lines(path)
        opened = sum(1 for l in lines if l["event"] == "connectionOpened")
        closed = sum(1 for l in lines if l["event"] == "connectionClosed")
        return lines if opened >= 2 and closed == opened else None
    return wait_for(complete, what="every connection closed in the event log")


def terminal_commands(lines):
    return [l for l in lines if l["event"] in ("commandSucceeded", "commandFailed")
            and "hello" not in l]


def workload(uri):
    client = MongoClient(uri, appname="otlp-test")
    coll = client.shop.orders
    for i in range(4):
        coll.insert_one({"item": f"book {i}", "qty": i})
    list(coll.find({"qty": {"$gte": 1}}, comment=f"00-{TRACE_ID}-{PARENT_ID}-01"))
    coll.count_documents({}, comment=f"/*action='list',traceparent='00-{TRACE_ID2}-{PARENT_ID2}-01'*/")
    try:
        client.shop.command("noSuchCommandHere")
    except OperationFailure:
        pass
    client.close()


class OtlpThroughProxy(unittest.TestCase):
    def test_spans_of_a_pymongo_workload(self):
        rx = Receiver()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                log = os.path.join(tmp, "events.log")
                with proxy(tmp, [
                    {"type": "file", "path": log},
                    {"type": "otlp", "endpoint": rx.url, "serviceName": "shop-db", "gzip": True,
                     "headers": {"x-api-key": "k-123"}, "batchDelaySeconds": 0.1},
                ]) as px:
                    workload(px.uri(directConnection="true"))
                    admin = admin_of(px)
                    # The events and their spans: wait until the counts agree.
                    expected = terminal_commands(complete_log(log))
                    wait_for(lambda: len(rx.spans()) >= len(expected), what="spans")
                    # Counted once the receiver's answer is read: a moment after
                    # the receiver has the spans.
                    sent = wait_for(lambda: (lambda v: v if v == len(expected) else None)(
                        metric(admin, "varanus_otlp_spans_sent_total", "otlp:" + rx.url)),
                        what="varanus_otlp_spans_sent_total == the spans received")
                lines = read_lines(log)
            events = terminal_commands(lines)
            spans = rx.spans()
            self.assertEqual(len(spans), len(events), (spans, events))
            self.assertEqual(sent, len(spans))
            starts = {(l["connectionId"], l["requestId"]): l for l in lines
                      if l["event"] == "commandStarted"}
            by_key = {(int(attrs(s)["varanus.connection_id"]), int(attrs(s)["varanus.request_id"])): s
                      for s in spans}
            self.assertEqual(len(by_key), len(spans))
            stub_host, stub_port = STUB_ADDR.rsplit(":", 1)
            for e in events:
                s = by_key[(e["connectionId"], e["requestId"])]
                a = attrs(s)
                # The OTLP JSON encoding: hex ids, nanoseconds as strings, enums as integers.
                self.assertRegex(s["traceId"], HEX32)
                self.assertRegex(s["spanId"], HEX16)
                self.assertRegex(s["startTimeUnixNano"], DIGITS)
                self.assertRegex(s["endTimeUnixNano"], DIGITS)
                self.assertEqual(s["kind"], 3)  # SPAN_KIND_CLIENT
                self.assertEqual(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]),
                                 e["durationMicros"] * 1000, e)
                start = starts[(e["connectionId"], e["requestId"])]
                coll = start["command"].get(e["commandName"])
                if isinstance(coll, str):
                    self.assertEqual(a["db.collection.name"], coll)
                    self.assertEqual(s["name"], f'{e["commandName"]} {coll}')
                else:
                    self.assertNotIn("db.collection.name", a)
                    self.assertEqual(s["name"], e["commandName"])
                self.assertEqual(a["db.system.name"], "mongodb")
                self.assertEqual(a["db.namespace"], e["databaseName"])
                self.assertEqual(a["db.operation.name"], e["commandName"])
                self.assertEqual(a["server.address"], stub_host)
                self.assertEqual(a["server.port"], stub_port)  # intValue: a string in JSON
                client_host, client_port = e["client"].rsplit(":", 1)
                self.assertEqual(a["client.address"], client_host)
                self.assertEqual(a["client.port"], client_port)
                self.assertEqual(a["varanus.app_name"], "otlp-test")
                self.assertIn("PyMongo", a["varanus.driver"])
                self.assertNotIn("db.query.text", a)  # not enabled
                if e["event"] == "commandFailed":
                    self.assertEqual(s["status"]["code"], 2)  # STATUS_CODE_ERROR
                    self.assertEqual(s["status"]["message"], e["failure"]["errmsg"])
                    self.assertEqual(a["db.response.status_code"], str(e["failure"]["code"]))
                    self.assertEqual(a["error.type"], e["failure"]["codeName"])
                else:
                    self.assertNotIn("status", s)
                    self.assertNotIn("error.type", a)
            failed = [s for s in spans if s.get("status", {}).get("code") == 2]
            self.assertEqual(len(failed), 1)
            self.assertEqual(attrs(failed[0])["error.type"], "CommandNotFound")
            # Trace context from the application's comment, both spellings.
            find = [s for s in spans if attrs(s)["db.operation.name"] == "find"]
            self.assertEqual(len(find), 1)
            self.assertEqual((find[0]["traceId"], find[0]["parentSpanId"]), (TRACE_ID, PARENT_ID))
            self.assertEqual(find[0]["flags"], 0x301)  # sampled, parent remote
            agg = [s for s in spans if s["traceId"] == TRACE_ID2]
            self.assertEqual(len(agg), 1, spans)
            self.assertEqual(agg[0]["parentSpanId"], PARENT_ID2)
            others = [s for s in spans if s["traceId"] not in (TRACE_ID, TRACE_ID2)]
            self.assertTrue(all("parentSpanId" not in s for s in others))
            self.assertEqual(len({s["traceId"] for s in others}), len(others))
            # The request: path, headers, resource.
            headers, body, path = rx.requests[0]
            self.assertEqual(path, "/v1/traces")
            self.assertEqual(headers["content-type"], "application/json")
            self.assertEqual(headers["content-encoding"], "gzip")
            self.assertEqual(headers["x-api-key"], "k-123")
            res = {a["key"]: a["value"]["stringValue"]
                   for a in body["resourceSpans"][0]["resource"]["attributes"]}
            self.assertEqual(res["service.name"], "shop-db")
            self.assertRegex(res["service.version"], r"^\d+\.\d+\.\d+")
            self.assertRegex(res["service.instance.id"], r"^[0-9a-f-]{36}$")
            self.assertEqual(res["host.name"], socket.gethostname())
            self.assertEqual(body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"], "varanus")
            print("a span as the receiver got it:\n" + json.dumps(find[0], indent=2))
        finally:
            rx.stop()

    def test_503_then_recovers_nothing_lost(self):
        rx = Receiver(fail_first=3)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                log = os.path.join(tmp, "events.log")
                with proxy(tmp, [
                    {"type": "file", "path": log},
                    {"type": "otlp", "endpoint": rx.url, "batchDelaySeconds": 0.05,
                     "minBackoffSeconds": 0.05, "maxBackoffSeconds": 0.2},
                ]) as px:
                    workload(px.uri(directConnection="true"))
                    admin = admin_of(px)
                    n = len(terminal_commands(complete_log(log)))
                    wait_for(lambda: len(rx.spans()) >= n, what="spans after the 503s")
                    sink = "otlp:" + rx.url
                    retries = metric(admin, "varanus_otlp_retries_total", sink)
                    failed = metric(admin, "varanus_otlp_posts_failed_total", sink)
                    dropped = metric(admin, "varanus_otlp_spans_dropped_total", sink)
            spans = rx.spans()
            self.assertEqual(len(spans), n)
            self.assertEqual(len({s["spanId"] for s in spans}), n)  # none twice
            self.assertEqual(rx.statuses[:3], [503, 503, 503])
            self.assertEqual(retries, 3)
            self.assertEqual(failed, 3)
            self.assertEqual(dropped, 0)
        finally:
            rx.stop()

    def test_never_answering_receiver_costs_traffic_nothing(self):
        def ping_latency(uri, n=300):
            client = MongoClient(uri, appname="latency")
            client.admin.command("ping")
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                client.admin.command("ping")
                times.append(time.perf_counter() - t0)
            client.close()
            return statistics.median(times)

        good = Receiver()
        hung = Receiver(hang=True)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                opts = {"maxQueueSpans": 50, "maxBatchSpans": 10, "batchDelaySeconds": 0.01,
                        "timeoutSeconds": 30, "maxRetries": 0}
                with proxy(tmp, [{"type": "otlp", "endpoint": good.url, **opts}]) as px:
                    base = ping_latency(px.uri(directConnection="true"))
                with proxy(tmp, [{"type": "otlp", "endpoint": hung.url, **opts}]) as px:
                    stalled = ping_latency(px.uri(directConnection="true"))
                    admin = admin_of(px)
                    sink = "otlp:" + hung.url
                    # 301 pings, at most 50 queued + 10 in flight: the rest dropped.
                    dropped = wait_for(lambda: (metric(admin, "varanus_otlp_spans_dropped_total",
                                                       sink) or 0) >= 301 - 60 and metric(
                        admin, "varanus_otlp_spans_dropped_total", sink), what="drops")
                    stats = json.loads(urllib.request.urlopen(f"http://{admin}/stats").read())
            print(f"ping median: receiver answering {base * 1e6:.0f} us, "
                  f"never answering {stalled * 1e6:.0f} us, spans dropped {dropped:.0f}")
            self.assertLessEqual(dropped, 301)
            otlp = [s for s in stats["sinks"] if s["name"] == sink][0]
            self.assertGreater(otlp["dropped"], 0)
            # The driver did not wait for the receiver (waiting would cost 30 s).
            self.assertLess(stalled, max(2 * base, base + 0.002), (base, stalled))
        finally:
            good.stop()
            hung.stop()

    def test_endpoint_down_at_start_is_not_an_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with tempfile.TemporaryDirectory() as tmp:
            with Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                         "--otlp-endpoint", f"http://127.0.0.1:{port}", "--admin", "127.0.0.1:0",
                         "--log-file", os.path.join(tmp, "e.log")],
                        name="proxy", address_from="stderr",
                        address_regex=r"listening on ([^\s,]+)") as px:
                client = MongoClient(px.uri(directConnection="true"))
                self.assertEqual(client.admin.command("ping")["ok"], 1.0)
                client.close()
                admin = admin_of(px)
                sink = f"otlp:http://127.0.0.1:{port}"
                wait_for(lambda: (metric(admin, "varanus_otlp_posts_failed_total", sink) or 0) >= 1,
                         what="a failed post")
                self.assertTrue(px.alive())




if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
