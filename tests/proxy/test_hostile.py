#!/usr/bin/env python3
"""Hostile input at the MongoDB port, through the real varanus and
varanus-stub (issue 25). Each case is its own test and checks the same
three things:

- the documented outcome: inspection of that connection stops (fail open:
  varanus keeps relaying, the upstream answers or closes as mongod would),
  counted in varanus_decode_errors_total or varanus_oversized_frames_total,
  with one stderr line naming the connection (a client pipelining past
  maxPendingRequests: varanus_pending_overflows_total); or, for input that
  decodes,
  events whose lines are valid JSON;
- no other connection is affected: a bystander connection pings before and
  after, and varanus is still running;
- every line of the event log is valid UTF-8 JSON.

    test_hostile.py VARANUS_BIN STUB_BIN [unittest args]
"""
import json
import os
import socket
import struct
import sys
import tempfile
import time
import unittest
import urllib.request
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, free_port, main_with_stub, wait_for  # noqa: E402
from test_wire import Wire  # noqa: E402

import bson  # noqa: E402

PROXY = STUB = STUB_ADDR = ""
OP_MSG = 2013
OP_COMPRESSED = 2012


def metric(admin, name):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def rss_kib(pid):
    """Resident set size of process `pid`, KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def op_msg(body_bytes, request_id=7):
    payload = struct.pack("<I", 0) + b"\x00" + body_bytes
    return struct.pack("<iiii", 16 + len(payload), request_id, 0, OP_MSG) + payload


def nested(depth):
    """{"a": {"a": ... {} }} nested `depth` levels, as raw BSON."""
    doc = b"\x05\x00\x00\x00\x00"  # {}
    for _ in range(depth):
        body = b"\x03a\x00" + doc
        doc = struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"
    return doc


def raw_doc(elements):
    return struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"


def bson_string(key, value_bytes):
    return b"\x02" + key + b"\x00" + struct.pack("<i", len(value_bytes) + 1) + value_bytes + b"\x00"


class HostileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.events_path = os.path.join(cls.tmp.name, "events.jsonl")
        cls.admin = f"127.0.0.1:{free_port()}"
        cls.proxy = Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                            "--log-file", cls.events_path, "--admin", cls.admin],
                           address_from="stderr", address_regex=r"listening on ([^\s,]+)")
        cls.proxy.start()
        cls.bystander = Wire(cls.proxy.address)

    @classmethod
    def tearDownClass(cls):
        cls.bystander.close()
        cls.proxy.stop()  # asserts exit code 0: varanus survived every case
        cls.tmp.cleanup()

    def ping_bystander(self):
        self.bystander.send_msg({"ping": 1, "$db": "admin"})
        self.assertEqual(self.bystander.recv()[4]["ok"], 1.0)

    def lines_are_json(self):
        with open(self.events_path, "rb") as f:
            for raw in f:
                json.loads(raw.decode("utf-8"))  # strict: invalid UTF-8 raises

    def send_hostile(self, data, counter, diag_in_stderr=True):
        """Sends `data` on a fresh connection; the counter must go up."""
        self.ping_bystander()
        before = metric(self.admin, counter)
        lines_before = self.proxy.stderr().count("inspection stopped")
        s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=10)
        try:
            s.sendall(data)
            wait_for(lambda: metric(self.admin, counter) > before, f"{counter} counted")
            if diag_in_stderr:
                wait_for(lambda: self.proxy.stderr().count("inspection stopped") > lines_before,
                         "one line naming the connection")
        finally:
            s.close()
        self.ping_bystander()
        self.assertIsNone(self.proxy.proc.poll(), "varanus is still running")
        self.lines_are_json()

    # -- messageLength -------------------------------------------------------
    def test_message_length_negative(self):
        self.send_hostile(struct.pack("<iiii", -1, 1, 0, OP_MSG) + b"x" * 16,
                          "varanus_decode_errors_total")

    def test_message_length_zero(self):
        self.send_hostile(struct.pack("<iiii", 0, 1, 0, OP_MSG) + b"x" * 16,
                          "varanus_decode_errors_total")

    def test_message_length_15(self):
        self.send_hostile(struct.pack("<iiii", 15, 1, 0, OP_MSG) + b"x" * 16,
                          "varanus_decode_errors_total")

    def test_message_length_int32_max(self):
        self.send_hostile(struct.pack("<iiii", 2 ** 31 - 1, 1, 0, OP_MSG) + b"x" * 16,
                          "varanus_oversized_frames_total")

    def test_message_length_48mb_plus_one(self):
        # Only the header is sent: the claim alone stops inspection.
        self.send_hostile(struct.pack("<iiii", 48_000_001, 1, 0, OP_MSG) + b"x" * 16,
                          "varanus_oversized_frames_total")

    # -- not MongoDB at all ----------------------------------------------------
    def test_garbage_before_any_handshake(self):
        self.send_hostile(bytes(range(7, 250)) * 2, "varanus_oversized_frames_total")

    def test_http_request_at_the_mongodb_port(self):
        # "GET " read as a messageLength is 542393671: over maxMessageSize.
        self.send_hostile(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "varanus_oversized_frames_total")

    # -- BSON inside a frame ---------------------------------------------------
    def test_bson_length_past_the_end(self):
        doc = bytearray(bson.encode({"ping": 1, "$db": "admin"}))
        doc[0:4] = struct.pack("<i", len(doc) + 1000)  # claims more than the frame holds
        self.send_hostile(op_msg(bytes(doc)), "varanus_decode_errors_total")

    def test_documents_nested_10000_deep(self):
        body = raw_doc(b"\x10ping\x00" + struct.pack("<i", 1) +
                       bson_string(b"$db", b"admin") + b"\x03deep\x00" + nested(10_000))
        self.send_hostile(op_msg(body), "varanus_decode_errors_total")

    def test_invalid_utf8_in_keys_and_strings(self):
        # Decodes (BSON does not check UTF-8): an event whose line must stay
        # valid JSON, with the bytes replaced.
        self.ping_bystander()
        body = raw_doc(b"\x10ping\x00" + struct.pack("<i", 1) + bson_string(b"$db", b"admin") +
                       bson_string(b"k\xff\xfe", b"v\xc3\x28\xed\xa0\x80"))
        s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=10)
        try:
            s.sendall(op_msg(body, request_id=4242))
            s.recv(65536)  # the stub's answer

            def event_for_it():
                with open(self.events_path, "rb") as f:
                    return [json.loads(l.decode("utf-8")) for l in f
                            if b'"requestId":4242' in l.replace(b" ", b"")]
            found = wait_for(event_for_it, "the events of the request")
            self.assertTrue(any(e["event"] == "commandStarted" for e in found), found)
        finally:
            s.close()
        self.ping_bystander()
        self.lines_are_json()

    # -- compression -----------------------------------------------------------
    def test_compressed_frame_claiming_2gb_uncompressed(self):
        # OP_COMPRESSED whose uncompressedSize claims 2 GB (2^31 - 1) for a
        # few bytes of zlib: refused from its header (over maxMessageSize,
        # and the decompression bomb guard), nothing allocated or inflated;
        # counted as oversized, one line naming the claim; relayed as is
        # (the stub refuses it as mongod would).
        payload = zlib.compress(struct.pack("<I", 0) + b"\x00" +
                                bson.encode({"ping": 1, "$db": "admin"}))
        rest = struct.pack("<iiB", OP_MSG, 2 ** 31 - 1, 2) + payload
        frame = struct.pack("<iiii", 16 + len(rest), 31, 0, OP_COMPRESSED) + rest
        rss_before = rss_kib(self.proxy.proc.pid)
        self.send_hostile(frame, "varanus_oversized_frames_total")
        self.assertIn("uncompressedSize 2147483647", self.proxy.stderr())
        grown = rss_kib(self.proxy.proc.pid) - rss_before
        print(f"\n2 GB claim: RSS {rss_before} KiB -> +{grown} KiB", file=sys.stderr)
        self.assertLess(grown, 16 * 1024, "a 2 GB claim allocated memory")

    # -- pipelining ------------------------------------------------------------
    def test_pipelined_requests_past_the_pending_cap(self):
        # A client pipelines pings without reading replies to an upstream
        # that answers none (the stub delays this connection's replies by
        # 20 s): past 1,000 requests without a reply (maxPendingRequests)
        # inspection of the connection stops (varanus_pending_overflows_total,
        # one line), the 1,000 pending fail with the reason, the relay goes
        # on, and varanus's memory stays bounded (before the cap: 1M
        # pipelined requests cost +250 MB).
        self.ping_bystander()
        w = Wire(self.proxy.address)
        try:
            # (Its own reply is delayed too: the first of the 1,000 pending.)
            w.send_msg({"stubFault": 1, "delayMs": 20000, "thisConnection": True,
                        "$db": "admin"})
            before = metric(self.admin, "varanus_pending_overflows_total")
            rss_before = rss_kib(self.proxy.proc.pid)
            ping = bson.encode({"ping": 1, "$db": "admin"})
            chunk = b"".join(op_msg(ping, request_id=1000 + i) for i in range(1000))
            w.sock.settimeout(2.0)
            sent = 0
            try:
                while sent < 1_000_000:  # until the buffers on the way are full
                    w.sock.sendall(chunk)
                    sent += 1000
            except socket.timeout:
                pass
            self.assertGreater(sent, 1000, "too few requests got through to pass the cap")
            wait_for(lambda: metric(self.admin, "varanus_pending_overflows_total") > before,
                     "varanus_pending_overflows_total counted")
            wait_for(lambda: "more than 1000 requests without a reply" in self.proxy.stderr(),
                     "one line naming the cause")
            grown = rss_kib(self.proxy.proc.pid) - rss_before
            reason = "inspection stopped: client: more than 1000 requests without a reply"

            def failed_with_reason():
                with open(self.events_path, "rb") as f:
                    return sum(1 for line in f if reason.encode() in line)
            # Every started event ends once: the 1,000 pending fail with it.
            wait_for(lambda: failed_with_reason() >= 1000, "1,000 failed events")
            self.assertEqual(failed_with_reason(), 1000)
            print(f"\npending cap: {sent} pings pipelined ({sent * len(chunk) // 1000 // 1024} "
                  f"KiB), RSS {rss_before} KiB -> +{grown} KiB", file=sys.stderr)
            self.assertLess(grown, 32 * 1024, "memory grew with the requests in flight")
        finally:
            w.close()
        self.ping_bystander()
        self.assertIsNone(self.proxy.proc.poll())
        self.lines_are_json()

    def test_slowloris_clients_hold_no_one_up(self):
        # 20 clients each sending a ping one byte at a time, 20 ms apart;
        # meanwhile the bystander's pings are answered at once.
        msg = op_msg(bson.encode({"ping": 1, "$db": "admin"}), request_id=99)
        slow = [socket.create_connection((self.proxy.host, self.proxy.port), timeout=30)
                for _ in range(20)]
        try:
            worst = 0.0
            for i in range(len(msg)):
                for s in slow:
                    s.send(msg[i:i + 1])
                t = time.monotonic()
                if i % 10 == 0:
                    self.ping_bystander()
                    worst = max(worst, time.monotonic() - t)
                time.sleep(0.02)
            for s in slow:  # each slow client gets its answer in the end
                s.settimeout(10)
                head = s.recv(16)
                self.assertEqual(len(head), 16)
            self.assertLess(worst, 1.0, "a bystander ping waited behind slow clients")
        finally:
            for s in slow:
                s.close()
        self.assertIsNone(self.proxy.proc.poll())
        self.lines_are_json()


if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
