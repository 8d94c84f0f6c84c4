#!/usr/bin/env python3
"""A decompression-bomb flood does not slow other clients (issue 25 item 1).

Four connections each send zlib OP_COMPRESSED bombs (61 kB claiming 60 MB
of zeros, about four a second each) through varanus while another client
pings. varanus runs with --max-message-size 64 MB so that, before the bomb
guard, it inflated every bomb in full; the stub (48 MB bound) refuses them
without inflating, so the figure measures varanus alone. Other clients'
ping p50 during the flood must stay within 2 x the baseline (+0.3 ms of
scheduling noise on a shared machine); the figures are printed.

The second case floods with frames the guard lets in (zlib inserts
claiming 62 MB at ~180:1, documents in a kind-1 sequence): inspection
inflates each only as far as its events need (design notes 22), and the
same bound holds.

    test_bomb_flood.py VARANUS_BIN STUB_BIN [unittest args]
"""
import os
import random
import socket
import statistics
import struct
import sys
import threading
import time
import unittest
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, free_port, main_with_stub  # noqa: E402

from pymongo import MongoClient  # noqa: E402

PROXY = STUB = STUB_ADDR = ""
CLAIMED = 60 * 1024 * 1024
# Bytes each flooding connection sends every 0.1 s. zlib cannot reach
# zstd's 30,000:1 (1,542 bytes claiming 47 MB at 20 KB/s is 13 bombs a
# second a connection); at ~1,000:1 comparable inflation work takes 256 KB
# every 0.1 s (~4 bombs a second a connection, 60 MB each). Without the
# guard, varanus inflated them all: 300 pings did not finish in 5 minutes.
CHUNK = int(os.environ.get("BOMB_CHUNK", 256 * 1024))


def bomb_frame():
    pad = bytes(CLAIMED - 64)
    body = b"\x02insert\x00" + struct.pack("<i", 2) + b"c\x00" + \
        b"\x02$db\x00" + struct.pack("<i", 5) + b"test\x00" + \
        b"\x02pad\x00" + struct.pack("<i", len(pad) + 1) + pad + b"\x00"
    doc = struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"
    original = struct.pack("<I", 0) + b"\x00" + doc  # OP_MSG flags, kind 0
    packed = zlib.compress(original, 9)
    rest = struct.pack("<iiB", 2013, len(original), 2) + packed
    return struct.pack("<iiii", 16 + len(rest), 7, 0, 2012) + rest


def pings(client, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.admin.command("ping")
        out.append(time.perf_counter() - t)
    return out


def under_ratio_frame():
    """A zlib insert claiming 60 MB that is no bomb: ~190:1, under the
    guard's 256:1, so inspection takes it. Its documents travel in a kind-1
    sequence after the body, as drivers send bulk writes."""
    rng = random.Random(25)
    pad = bytearray(CLAIMED // 64)
    for i in range(0, len(pad), 640):  # a random byte every 640 keeps it near 190:1
        pad[i] = rng.randrange(256)
    doc_body = b"\x05pad\x00" + struct.pack("<i", len(pad)) + b"\x00" + bytes(pad)
    doc = struct.pack("<i", 4 + len(doc_body) + 1) + doc_body + b"\x00"
    docs = doc * 63
    body = b"\x02insert\x00" + struct.pack("<i", 2) + b"c\x00" + \
        b"\x02$db\x00" + struct.pack("<i", 5) + b"test\x00"
    body_doc = struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"
    seq = struct.pack("<i", 4 + len(b"documents\x00") + len(docs)) + b"documents\x00" + docs
    original = struct.pack("<I", 0) + b"\x00" + body_doc + b"\x01" + seq
    packed = zlib.compress(original, 9)
    rest = struct.pack("<iiB", 2013, len(original), 2) + packed
    return struct.pack("<iiii", 16 + len(rest), 7, 0, 2012) + rest


def metric(admin, name):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


class BombFlood(unittest.TestCase):
    def flood(self, frame, extra_args=()):
        """Other clients' ping p50 before and during a flood of `frame` from
        four connections (CHUNK bytes every 0.1 s each); the proxy's stderr."""
        admin = f"127.0.0.1:{free_port()}"
        with Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                     "--max-message-size", str(64 * 1024 * 1024), "--admin", admin,
                     *extra_args], name="proxy",
                    address_from="stderr", address_regex=r"listening on ([^\s,]+)") as px:
            host, port = px.address.rsplit(":", 1)
            client = MongoClient(px.uri(directConnection="true"))
            pings(client, 50)  # warm up
            baseline = statistics.median(pings(client, 300))
            stop = threading.Event()
            sent = [0]

            def flood():
                while not stop.is_set():
                    try:
                        with socket.create_connection((host, int(port)), timeout=5) as s:
                            for i in range(0, len(frame), CHUNK):
                                if stop.is_set():
                                    return
                                s.sendall(frame[i:i + CHUNK])
                                sent[0] += 1
                                time.sleep(0.1)
                    except OSError:
                        pass  # the stub closed the connection: open another

            threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                # Let every connection get whole frames through first.
                deadline = time.monotonic() + 30
                while sent[0] < 4 * (len(frame) // CHUNK + 1) and time.monotonic() < deadline:
                    pings(client, 10)
                during = statistics.median(pings(client, 300))
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
            client.close()
            sparse = metric(admin, "varanus_sparse_frames_total")
            stderr = px.stderr()
        return baseline, during, sparse, stderr

    def test_other_clients_ping_p50_within_2x_during_a_bomb_flood(self):
        frame = bomb_frame()
        self.assertLess(len(frame) * 256, CLAIMED)  # a real bomb
        baseline, during, _, stderr = self.flood(frame)
        print(f"\nping p50: baseline {baseline * 1000:.3f} ms, during a 4-connection zlib "
              f"bomb flood ({len(frame)} bytes claiming {CLAIMED}) {during * 1000:.3f} ms",
              file=sys.stderr)
        self.assertIn("decompression bomb guard", stderr)
        self.assertLessEqual(during, 2 * baseline + 0.0003, stderr[-2000:])

    def test_other_clients_ping_p50_within_2x_during_a_flood_under_the_ratio(self):
        # Frames the guard lets in: inspection inflates each only as far as
        # its events need (the body and the first documents: the kind-1
        # sequence after them is never inflated), not 60 MB.
        frame = under_ratio_frame()
        self.assertGreater(len(frame) * 256, CLAIMED)  # not refused by the guard
        baseline, during, sparse, stderr = self.flood(frame)
        print(f"\nping p50: baseline {baseline * 1000:.3f} ms, during a 4-connection zlib "
              f"flood under the ratio ({len(frame)} bytes claiming {CLAIMED}, "
              f"{sparse:.0f} inspected as they inflated) {during * 1000:.3f} ms",
              file=sys.stderr)
        self.assertNotIn("decompression bomb guard", stderr)
        self.assertGreaterEqual(sparse, 4, "the frames were not inspected")
        self.assertLessEqual(during, 2 * baseline + 0.0003, stderr[-2000:])


if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
