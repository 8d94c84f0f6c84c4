#!/usr/bin/env python3
"""Byte-level transparency of varanus (issue 25, "Transparency").

Every workload runs through two recording taps of this script's own:

    client -> tapA -> varanus -> tapB -> varanus-stub

Each tap is a separate process (`test_transparency.py --tap UPSTREAM DIR`,
a selectors relay) that records, per TCP connection, the bytes of each
direction: their length, SHA-256, the frames in them (opcodes, OP_MSG
flags, compressors), and the bytes themselves (in memory, spilled to files
in DIR past 1 MiB, so 48 MB messages cost no memory). On SIGTERM a tap
stops accepting, lets its open connections finish, and writes DIR/index.json.

Pairing: varanus opens one upstream connection per client connection, so
tapA's connections and tapB's must be the same multiset of (client->server
bytes, server->client bytes), matched by length and SHA-256 of the whole
streams (timing plays no part). Any stream of one side without its equal on
the other fails the test, printing, against the closest candidate (the one
at the same rank by order of accept), the first differing offset and a hex
window of both sides; so does a different number of connections, a
connection still open when the workload is over, or one the server side
reset. Two things are not differences: a client that resets its connection
(PyMongo closing a monitoring socket with a streaming hello reply unread)
is passed on by tapA as a FIN, and tapA keeps recording what varanus still
sends, so the streams stay comparable; and with an admin endpoint
(varanus-bench's Prometheus target) varanus's health check opens upstream
connections of its own that carry no byte, counted apart.

Workloads: PyMongo 3.11 with no compressor and with snappy, zlib and zstd
(CRUD, bulk, aggregate, getMore, killCursors, exhaust cursors, w:0 writes,
sessions, streaming hello with heartbeatFrequencyMS 500); four PyMongo
clients with four threads each on a random mix for
VARANUS_TRANSPARENCY_SECONDS (default 20); messages of exactly
maxMessageSizeBytes (48,000,000) and PyMongo batches split at it; raw
frames of every opcode (OP_QUERY, OP_GET_MORE, OP_KILL_CURSORS, OP_INSERT,
OP_UPDATE, OP_DELETE, OP_COMPRESSED with each compressor, OP_MSG with kind-1
sequences / checksum / moreToCome / exhaustAllowed, OP_COMMAND); 200
concurrent connections each running a short mixed script; a replica-set
member behind a HOST:PORT upstream (hello replies unchanged); the Node.js
driver's integration workload with each compressor; and varanus-bench
--smoke (the project's load client and libmongoc) with the taps around every
varanus it starts (`--wrap-varanus`). Two more cases check the harness
itself: the comparison on records that differ, and a relay flipping one bit
between the taps (in varanus's place) caught with its offset.

    test_transparency.py VARANUS_BIN STUB_BIN BENCH_BIN [unittest args]

Totals (connections, bytes and messages each way, opcodes) are printed per
workload and for the whole run.
"""
import collections
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Server, start_stub, wait_for  # noqa: E402  (stdlib only: taps load it fast)

PROXY = STUB = STUB_ADDR = BENCH = ""

OP_NAMES = {1: "OP_REPLY", 2001: "OP_UPDATE", 2002: "OP_INSERT", 2004: "OP_QUERY",
            2005: "OP_GET_MORE", 2006: "OP_DELETE", 2007: "OP_KILL_CURSORS",
            2010: "OP_COMMAND", 2011: "OP_COMMANDREPLY", 2012: "OP_COMPRESSED", 2013: "OP_MSG"}
COMPRESSORS = {0: "noop", 1: "snappy", 2: "zlib", 3: "zstd"}
CHECKSUM, MORE_TO_COME, EXHAUST_ALLOWED = 1, 1 << 1, 1 << 16
SPILL = 1 << 20  # bytes of a stream kept in memory before it goes to a file
DRAIN_SECONDS = 30.0  # how long a stopping tap waits for its connections


# =============================================================== the tap
class Frames:
    """Counts the frames of one direction incrementally (headers only)."""

    __slots__ = ("hdr", "skip", "length", "bad", "messages", "ops", "largest")

    def __init__(self):
        self.hdr = bytearray()
        self.skip = 0
        self.length = 0
        self.bad = False
        self.messages = 0
        self.ops = collections.Counter()
        self.largest = 0

    def feed(self, data):
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n and not self.bad:
            if self.skip:
                t = min(self.skip, n - i)
                self.skip -= t
                i += t
                continue
            if len(self.hdr) < 4:
                t = min(4 - len(self.hdr), n - i)
                self.hdr += mv[i:i + t]
                i += t
                if len(self.hdr) < 4:
                    break
                self.length = struct.unpack_from("<i", self.hdr)[0]
                if self.length < 16:
                    self.bad = True
                    break
            want = min(self.length, 25)
            t = min(want - len(self.hdr), n - i)
            self.hdr += mv[i:i + t]
            i += t
            if len(self.hdr) < want:
                break
            self._classify()
            self.skip = self.length - want
            self.hdr = bytearray()

    def _classify(self):
        h = self.hdr
        self.messages += 1
        self.largest = max(self.largest, self.length)
        (op,) = struct.unpack_from("<i", h, 12)
        name = OP_NAMES.get(op, f"opcode {op}")
        if op == 2013 and len(h) >= 20:
            (flags,) = struct.unpack_from("<I", h, 16)
            for bit, what in ((CHECKSUM, "checksum"), (MORE_TO_COME, "moreToCome"),
                              (EXHAUST_ALLOWED, "exhaustAllowed")):
                if flags & bit:
                    self.ops[f"OP_MSG {what}"] += 1
        elif op == 2012 and len(h) >= 25:
            (inner,) = struct.unpack_from("<i", h, 16)
            name = (f"OP_COMPRESSED({OP_NAMES.get(inner, inner)}, "
                    f"{COMPRESSORS.get(h[24], h[24])})")
        self.ops[name] += 1


class Stream:
    """One direction of one connection: hash, length, frames, the bytes."""

    def __init__(self, spill_path):
        self.sha = hashlib.sha256()
        self.length = 0
        self.frames = Frames()
        self.buf = bytearray()
        self.file = None
        self.spill_path = spill_path

    def add(self, data):
        self.sha.update(data)
        self.length += len(data)
        self.frames.feed(data)
        if self.file is not None:
            self.file.write(data)
            return
        self.buf += data
        if len(self.buf) > SPILL:
            self.file = open(self.spill_path, "wb")
            self.file.write(self.buf)
            self.buf = bytearray()

    def finish(self, small):
        """Closes the spill file, or appends the bytes to the shared file
        `small` (an open binary file); returns the stream's record."""
        if self.file is not None:
            self.file.close()
            where = (self.spill_path, 0)
        else:
            where = (small.name, small.tell())
            small.write(self.buf)
            self.buf = bytearray()
        return {"file": where[0], "offset": where[1], "length": self.length,
                "sha256": self.sha.hexdigest(), "messages": self.frames.messages,
                "largest": self.frames.largest,
                "ops": dict(self.frames.ops), "unparsed": self.frames.bad}


class ServerReset(Exception):
    """The server side of a tap's connection reset it or refused a write."""


class Pipe:
    """src -> dst, with what dst has not taken yet."""

    def __init__(self, src, dst, stream):
        self.src, self.dst, self.stream = src, dst, stream
        self.out = bytearray()
        self.eof = False  # src said FIN
        self.shut = False  # FIN passed on to dst


class Conn:
    def __init__(self, number, client, upstream, outdir):
        self.number = number
        self.accepted = time.time()
        self.client, self.upstream = client, upstream
        self.up = Pipe(client, upstream, Stream(os.path.join(outdir, f"c{number}-up.bin")))
        self.down = Pipe(upstream, client, Stream(os.path.join(outdir, f"c{number}-down.bin")))
        self.end = None
        self.client_reset = False


class Tap:
    HIGH_WATER = 8 << 20  # bytes waiting for dst before src is no longer read

    def __init__(self, upstream, outdir):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host.strip("[]"), int(port))
        self.outdir = outdir
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns = {}  # socket -> Conn
        self.done = []
        self.count = 0
        self.stopping = False
        self.small = open(os.path.join(outdir, "streams.bin"), "wb")

    def address(self):
        return "%s:%d" % self.listener.getsockname()[:2]

    def run(self):
        deadline = None
        while True:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + DRAIN_SECONDS
                self.sel.unregister(self.listener)
                self.listener.close()
            if deadline is not None and (not self.conns or time.monotonic() > deadline):
                break
            for key, events in self.sel.select(0.1):
                if key.data is None:
                    self.accept()
                else:
                    self.service(key.data, key.fileobj, events)
        for conn in {id(c): c for c in self.conns.values()}.values():
            self.finish(conn, "open")
        self.small.close()
        with open(os.path.join(self.outdir, "index.json.tmp"), "w") as f:
            json.dump({"connections": self.done, "accepted": self.count}, f)
        os.rename(os.path.join(self.outdir, "index.json.tmp"),
                  os.path.join(self.outdir, "index.json"))

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.count += 1
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError as e:
                client.close()
                self.done.append({"number": self.count, "end": f"upstream connect failed: {e}"})
                continue
            for s in (client, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self.count, client, upstream, self.outdir)
            self.conns[client] = self.conns[upstream] = conn
            self.sel.register(client, selectors.EVENT_READ, conn)
            self.sel.register(upstream, selectors.EVENT_READ, conn)

    def service(self, conn, sock, events):
        if conn.end is not None or (sock is conn.client and conn.client_reset):
            return  # ended (or its client lost) by an earlier event of the same select
        try:
            if events & selectors.EVENT_WRITE:
                for p in (conn.up, conn.down):
                    if p.dst is sock:
                        self.flush(conn, p)
            if events & selectors.EVENT_READ:
                p = conn.up if sock is conn.client else conn.down
                if not p.eof and len(p.out) < self.HIGH_WATER:
                    self.read(conn, p)
        except ServerReset as e:
            self.finish(conn, f"reset by the server side: {e}")
            return
        if all(p.eof and p.shut for p in (conn.up, conn.down)):
            self.finish(conn, "closed after a client reset" if conn.client_reset else "closed")
            return
        self.interest(conn)

    def read(self, conn, p):
        try:
            data = p.src.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if p.src is conn.client:
                self.lose_client(conn)
                return
            raise ServerReset(e) from e
        if not data:
            p.eof = True
        else:
            p.stream.add(data)
            if not (conn.client_reset and p.dst is conn.client):
                p.out += self.alter(conn, p, data)
        self.flush(conn, p)

    def alter(self, conn, p, data):
        """What is passed on for `data` (a tap passes it on unchanged)."""
        return data

    def flush(self, conn, p):
        if conn.client_reset and p.dst is conn.client:
            p.out.clear()  # the client is gone: what the server says is only recorded
        while p.out:
            try:
                sent = p.dst.send(p.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if p.dst is conn.client:
                    self.lose_client(conn)
                    return
                raise ServerReset(e) from e
            del p.out[:sent]
        if p.eof and not p.out and not p.shut:
            if not (conn.client_reset and p.dst is conn.client):
                try:
                    p.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            p.shut = True

    def lose_client(self, conn):
        """The client reset the connection (a driver closing a monitoring
        socket with a reply unread does): passed on as a FIN, so the server
        side ends as it would and what it still sends is recorded."""
        conn.client_reset = True
        try:
            self.sel.unregister(conn.client)
        except (KeyError, ValueError):
            pass
        conn.client.close()
        conn.up.eof = True
        conn.down.out.clear()
        self.flush(conn, conn.up)
        self.flush(conn, conn.down)

    def interest(self, conn):
        for sock in (conn.client, conn.upstream):
            if sock is conn.client and conn.client_reset:
                continue
            rd = conn.up if sock is conn.client else conn.down
            wr = conn.down if sock is conn.client else conn.up
            ev = 0
            if not rd.eof and len(rd.out) < self.HIGH_WATER:
                ev |= selectors.EVENT_READ
            if wr.out:
                ev |= selectors.EVENT_WRITE
            try:
                key = self.sel.get_key(sock)
            except KeyError:
                key = None
            if ev == 0:
                if key is not None:
                    self.sel.unregister(sock)
            elif key is None:
                self.sel.register(sock, ev, conn)
            elif key.events != ev:
                self.sel.modify(sock, ev, conn)

    def finish(self, conn, how):
        if conn.end is not None:
            return
        conn.end = how
        for sock in (conn.client, conn.upstream):
            self.conns.pop(sock, None)
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.done.append({"number": conn.number, "accepted": conn.accepted, "end": how,
                          "up": conn.up.stream.finish(self.small),
                          "down": conn.down.stream.finish(self.small)})


class CorruptingRelay(Tap):
    """Not transparent on purpose (the harness's own check): flips bit 5 of
    the client's byte at offset `at` of each connection."""

    def __init__(self, upstream, outdir, at):
        super().__init__(upstream, outdir)
        self.at = at

    def alter(self, conn, p, data):
        start = p.stream.length - len(data)
        if p is conn.up and start <= self.at < start + len(data):
            data = bytearray(data)
            data[self.at - start] ^= 0x20
        return data


def tap_main(upstream, outdir):
    os.makedirs(outdir, exist_ok=True)
    tap = Tap(upstream, outdir)

    def stop(*_):
        tap.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(tap.address(), flush=True)
    tap.run()
    return 0


def wrap_main(real, record_dir, args):
    """Stands in for varanus when varanus-bench starts it (--varanus is a
    script calling this): the real varanus, with tapB before its upstream
    and tapA before its listening port, which is the one announced. Each
    start records in a directory RECORD_DIR/run-*/ of its own: tapA/,
    tapB/, varanus.rc, and `done` once both taps have written their index.
    The taps and varanus run in sessions of their own, so a SIGKILL from
    the bench cannot lose the records."""
    if "--listen" not in args or "--upstream" not in args:
        os.execv(real, [real] + args)  # --help, --check-config
    args = list(args)
    run = tempfile.mkdtemp(prefix="run-", dir=record_dir)
    if "--admin" in args or "--metrics" in args:
        open(os.path.join(run, "admin"), "w").close()  # its health check connects upstream

    def tap(upstream, name):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--tap", upstream,
                              os.path.join(run, name)], stdout=subprocess.PIPE,
                             start_new_session=True)
        return p, p.stdout.readline().decode().strip()

    tap_b, b_addr = tap(args[args.index("--upstream") + 1], "tapB")
    args[args.index("--upstream") + 1] = b_addr
    listen = args.index("--listen") + 1
    args[listen] = "127.0.0.1:0"
    proxy = subprocess.Popen([real] + args, stderr=subprocess.PIPE, start_new_session=True)
    tap_a = None
    for raw in proxy.stderr:
        line = raw.decode("utf-8", "replace")
        if tap_a is None and "listening on" in line:
            v_addr = line.split("listening on", 1)[1].split()[0].rstrip(",")
            tap_a, a_addr = tap(v_addr, "tapA")
            line = line.replace(v_addr, a_addr)
        sys.stderr.write(line)
        sys.stderr.flush()
        if tap_a is not None:
            break

    def forward():
        for raw in proxy.stderr:
            sys.stderr.write(raw.decode("utf-8", "replace"))
            sys.stderr.flush()

    threading.Thread(target=forward, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.05) and proxy.poll() is None:
        pass
    if proxy.poll() is None:
        proxy.send_signal(signal.SIGTERM)
    rc = proxy.wait(60)
    with open(os.path.join(run, "varanus.rc"), "w") as f:
        f.write(str(rc))
    for t in (tap_a, tap_b):
        if t is not None:
            t.send_signal(signal.SIGTERM)
    for t in (tap_a, tap_b):
        if t is not None:
            t.wait(DRAIN_SECONDS + 10)
    open(os.path.join(run, "done"), "w").close()
    return rc


# =============================================================== comparing
def read_bytes(rec, start=0, n=None):
    n = rec["length"] - start if n is None else min(n, rec["length"] - start)
    if n <= 0:
        return b""
    with open(rec["file"], "rb") as f:
        f.seek(rec["offset"] + start)
        return f.read(n)


def first_difference(a, b):
    """(offset, None) of the first byte where streams a and b differ, reading
    1 MiB at a time; None if equal."""
    off, step = 0, 1 << 20
    while True:
        x, y = read_bytes(a, off, step), read_bytes(b, off, step)
        if x != y:
            for i in range(min(len(x), len(y))):
                if x[i] != y[i]:
                    return off + i
            return off + min(len(x), len(y))
        if not x:
            return None
        off += step


def hex_window(rec, at, before=32, after=48):
    start = max(0, at - before)
    data = read_bytes(rec, start, before + after)
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        mark = " <" if start + i <= at < start + i + 16 else ""
        lines.append(f"    {start + i:10d}  {chunk.hex(' ')}{mark}")
    return "\n".join(lines) or "    (no bytes)"


def key_of(c):
    return (c["up"]["sha256"], c["up"]["length"], c["down"]["sha256"], c["down"]["length"])


def explain(a, b):
    """What differs between tapA's connection a and tapB's connection b."""
    out = [f"  tapA connection #{a['number']} (end: {a['end']}) vs tapB connection "
           f"#{b['number'] if b else '-'} ({b['end'] if b else 'no candidate'})"]
    if b is None:
        return "\n".join(out)
    for d, what_a, what_b in (("up", "client -> varanus", "varanus -> stub"),
                              ("down", "varanus -> client", "stub -> varanus")):
        at = first_difference(a[d], b[d])
        if at is None:
            out.append(f"   {d}: equal ({a[d]['length']} bytes)")
            continue
        out.append(f"   {d}: {what_a} {a[d]['length']} bytes, {what_b} {b[d]['length']} bytes; "
                   f"first difference at offset {at}")
        out.append(f"   tapA ({what_a}):\n" + hex_window(a[d], at))
        out.append(f"   tapB ({what_b}):\n" + hex_window(b[d], at))
    return "\n".join(out)


def is_empty(c):
    return "up" in c and c["up"]["length"] == 0 and c["down"]["length"] == 0


def compare(index_a, index_b, health_checks=False):
    """Returns (problems, totals, ops) for the two taps' records.

    health_checks: varanus ran with an admin endpoint, whose health check
    connects to the upstream now and then and closes without a byte: that
    many connections empty both ways at tapB beyond those at tapA are
    varanus's own, counted apart, not a difference."""
    problems = []
    a_all, b_all = index_a["connections"], list(index_b["connections"])
    checks = 0
    if health_checks:
        checks = max(0, sum(map(is_empty, b_all)) - sum(map(is_empty, a_all)))
        for _ in range(checks):
            b_all.remove(next(c for c in b_all if is_empty(c)))
    for side, conns in (("tapA", a_all), ("tapB", b_all)):
        for c in conns:
            if c["end"] not in ("closed", "closed after a client reset"):
                problems.append(f"{side} connection #{c['number']} ended '{c['end']}'")
            elif c["up"]["unparsed"] or c["down"]["unparsed"]:
                problems.append(f"{side} connection #{c['number']}: a stream that is not frames")
    a = sorted((c for c in a_all if "up" in c), key=lambda c: c["number"])
    b = sorted((c for c in b_all if "up" in c), key=lambda c: c["number"])
    if len(a_all) != len(b_all):
        problems.append(f"{len(a_all)} connections at tapA (client side), {len(b_all)} at tapB "
                        "(upstream side)")
    ca = collections.Counter(key_of(c) for c in a)
    cb = collections.Counter(key_of(c) for c in b)
    missing_b = ca - cb
    missing_a = cb - ca
    if missing_b or missing_a:
        left_a = [c for c in a if missing_b[key_of(c)] > 0]
        left_b = [c for c in b if missing_a[key_of(c)] > 0]
        problems.append(f"{sum(missing_b.values())} tapA streams without an equal at tapB, "
                        f"{sum(missing_a.values())} tapB streams without an equal at tapA")
        # Closest candidates: same rank among the unmatched, by order of accept.
        for i, c in enumerate(left_a[:5]):
            problems.append(explain(c, left_b[i] if i < len(left_b) else None))
        for c in left_b[len(left_a):len(left_a) + 3]:
            problems.append(f"  tapB connection #{c['number']} has no tapA counterpart "
                            f"(up {c['up']['length']} bytes, down {c['down']['length']} bytes)")
    totals = collections.Counter()
    if checks:
        totals["health-check connections (tapB only, no bytes)"] = checks
    ops = collections.Counter()
    for c in a:
        totals["connections"] += 1
        if c["end"] != "closed":
            totals["client resets"] += 1
        totals["bytes client->server"] += c["up"]["length"]
        totals["bytes server->client"] += c["down"]["length"]
        totals["messages client->server"] += c["up"]["messages"]
        totals["messages server->client"] += c["down"]["messages"]
        totals["largest message"] = max(totals["largest message"], c["up"]["largest"],
                                        c["down"]["largest"])
        ops.update(c["up"]["ops"])
        ops.update(c["down"]["ops"])
    return problems, totals, ops



# =============================================================== raw frames
def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def compress(compressor, data):
    if compressor == 1:
        import snappy
        return snappy.compress(data)
    if compressor == 2:
        return zlib.compress(data)
    import zstandard
    return zstandard.ZstdCompressor().compress(data)


def decompress(compressor, data):
    if compressor == 1:
        import snappy
        return snappy.uncompress(data)
    if compressor == 2:
        return zlib.decompress(data)
    import zstandard
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


class Raw:
    """A client of raw frames: every opcode, built here byte by byte."""

    def __init__(self, address, timeout=30.0):
        import bson  # python3-pymongo's
        self.bson = bson
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.next_id = 0

    def close(self):
        self.sock.close()

    def send(self, opcode, body, compressor=None):
        self.next_id += 1
        if compressor is not None:
            body = struct.pack("<iiB", opcode, len(body), compressor) + compress(compressor, body)
            opcode = 2012
        self.sock.sendall(struct.pack("<iiii", 16 + len(body), self.next_id, 0, opcode) + body)
        return self.next_id

    def msg(self, doc, flags=0, sequences=(), checksum=False, compressor=None):
        body = struct.pack("<I", flags | (CHECKSUM if checksum else 0)) + b"\x00"
        body += self.bson.encode(doc)
        for ident, docs in sequences:
            payload = ident.encode() + b"\x00" + b"".join(self.bson.encode(d) for d in docs)
            body += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
        if checksum:
            header = struct.pack("<iiii", 16 + len(body) + 4, self.next_id + 1, 0, 2013)
            body += struct.pack("<I", crc32c(header + body))
        return self.send(2013, body, compressor)

    def query(self, ns, query, n_return=-1, flags=0, skip=0, compressor=None):
        body = struct.pack("<i", flags) + ns.encode() + b"\x00" + struct.pack("<ii", skip, n_return)
        return self.send(2004, body + self.bson.encode(query), compressor)

    def get_more(self, ns, n_return, cursor_id):
        body = struct.pack("<i", 0) + ns.encode() + b"\x00"
        body += struct.pack("<iq", n_return, cursor_id)
        return self.send(2005, body)

    def kill_cursors(self, ids):
        body = struct.pack("<ii", 0, len(ids)) + b"".join(struct.pack("<q", i) for i in ids)
        return self.send(2007, body)

    def legacy_write(self, opcode, ns, *docs):
        """OP_INSERT (flags, ns, docs) or OP_UPDATE / OP_DELETE (ZERO, ns,
        flags, selector[, update])."""
        body = struct.pack("<i", 0) + ns.encode() + b"\x00"
        if opcode != 2002:
            body += struct.pack("<i", 0)
        return self.send(opcode, body + b"".join(self.bson.encode(d) for d in docs))

    def recv_exact(self, n):
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise EOFError(f"connection closed after {got} of {n} bytes")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv(self):
        """(responseTo, opcode, flags, docs, cursor id) of the next reply."""
        length, _, response_to, opcode = struct.unpack("<iiii", self.recv_exact(16))
        rest = self.recv_exact(length - 16)
        if opcode == 2012:
            opcode, size, compressor = struct.unpack("<iiB", rest[:9])
            rest = decompress(compressor, rest[9:])
            assert len(rest) == size, "uncompressedSize"
        if opcode == 2013:
            (flags,) = struct.unpack("<I", rest[:4])
            doc = self.bson.decode(rest[5:5 + struct.unpack("<i", rest[5:9])[0]])
            return response_to, opcode, flags, [doc], None
        assert opcode == 1, f"opcode {opcode}"
        flags, cursor_id, _, n = struct.unpack("<iqii", rest[:20])
        docs = self.bson.decode_all(rest[20:])
        assert len(docs) == n
        return response_to, opcode, flags, docs, cursor_id

    def command(self, doc, **kw):
        rid = self.msg(doc, **kw)
        response_to, _, flags, docs, _ = self.recv()
        assert response_to == rid and not flags & MORE_TO_COME
        return docs[0]

    def legacy_command(self, db, doc, compressor=None):
        rid = self.query(db + ".$cmd", doc, compressor=compressor)
        response_to, opcode, _, docs, _ = self.recv()
        assert response_to == rid and opcode == 1
        return docs[0]


# =============================================================== the chain
class TapProcess:
    """A tap in a process of its own (this script with --tap)."""

    def __init__(self, upstream, outdir):
        os.makedirs(outdir, exist_ok=True)
        self.outdir = outdir
        self.server = Server([sys.executable, os.path.abspath(__file__), "--tap", upstream, outdir],
                             name=f"tap({os.path.basename(outdir)})",
                             stop_timeout=DRAIN_SECONDS + 30)
        self.server.start()
        self.address = self.server.address

    def stop(self):
        self.server.stop()
        with open(os.path.join(self.outdir, "index.json")) as f:
            return json.load(f)


class Chain:
    """tapA -> varanus -> tapB -> the stub, for one workload."""

    def __init__(self, tmpdir, name, stub_addr=None):
        self.dir = os.path.join(tmpdir, name)
        self.tap_b = TapProcess(stub_addr or STUB_ADDR, os.path.join(self.dir, "tapB"))
        self.events = os.path.join(self.dir, "events.jsonl")
        self.proxy = Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", self.tap_b.address,
                             "--log-file", self.events],
                            address_from="stderr", address_regex=r"listening on ([^\s,]+)")
        self.proxy.start()
        self.tap_a = TapProcess(self.proxy.address, os.path.join(self.dir, "tapA"))
        self.address = self.tap_a.address
        host, port = self.address.rsplit(":", 1)
        self.host, self.port = host, int(port)

    def uri(self, **opts):
        q = "&".join(f"{k}={v}" for k, v in {"directConnection": "true", **opts}.items())
        return f"mongodb://{self.address}/?{q}"

    def stop(self):
        """Stops tapA (its connections finish first), varanus, tapB; returns
        both taps' records."""
        index_a = self.tap_a.stop()
        self.proxy.stop()
        index_b = self.tap_b.stop()
        return index_a, index_b


GRAND = collections.Counter()
GRAND_OPS = collections.Counter()


class TransparencyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import bson  # python3-pymongo's
        cls.bson = bson
        cls.tmp = tempfile.mkdtemp(prefix="varanus-transparency-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_through(self, name, workload, expect_ops=(), stub_addr=None):
        """Runs workload(chain) through a fresh chain, stops it, and asserts
        the two taps saw the same bytes; returns the totals and ops seen."""
        chain = Chain(self.tmp, name, stub_addr)
        try:
            workload(chain)
        except BaseException:
            try:
                chain.stop()
            except Exception as e:  # noqa: BLE001 - the workload's failure matters more
                sys.stderr.write(f"(while stopping after a failure) {e}\n")
            raise
        index_a, index_b = chain.stop()
        problems, totals, ops = compare(index_a, index_b)
        report = ", ".join(f"{k} {v:,}" for k, v in totals.items())
        sys.stderr.write(f"\n[{name}] {report}\n[{name}] opcodes: "
                         + ", ".join(f"{k} {v:,}" for k, v in sorted(ops.items())) + "\n")
        self.assertFalse(problems, f"{name}: the bytes differ across varanus:\n"
                         + "\n".join(problems))
        self.assertGreater(totals["connections"], 0, "the workload went through the taps")
        for op in expect_ops:
            self.assertIn(op, ops, f"{name}: the workload was to send {op}")
        grand = collections.Counter(totals)
        GRAND["largest message"] = max(GRAND["largest message"], grand.pop("largest message"))
        GRAND.update(grand)
        GRAND["workloads"] += 1
        GRAND_OPS.update(ops)
        shutil.rmtree(chain.dir, ignore_errors=True)
        return totals, ops

    # ------------------------------------------------------------ PyMongo
    def pymongo_workload(self, compressor):
        import pymongo
        from bson import Int64
        from pymongo import CursorType, MongoClient, ReturnDocument
        from pymongo.write_concern import WriteConcern

        def work(chain):
            opts = {"heartbeatFrequencyMS": "500", "appName": f"transparency-{compressor}"}
            if compressor != "none":
                opts["compressors"] = compressor
            client = MongoClient(chain.uri(**opts), serverSelectionTimeoutMS=10000)
            try:
                status0 = client.admin.command("serverStatus")["varanusStub"]
                db = client[f"tr_{compressor}"]
                db.drop_collection("c")
                c = db.c
                c.insert_one({"_id": 0, "kind": "one", "n": 0})
                c.insert_many([{"_id": i, "n": i, "s": "x" * (i % 50), "tags": [i % 3, i % 5]}
                               for i in range(1, 3000)])  # kind-1 sequences, several batches
                self.assertEqual(c.count_documents({}), 3000)
                self.assertEqual(c.estimated_document_count(), 3000)
                self.assertEqual(len(list(c.find({"n": {"$gte": 100}}).batch_size(97))), 2900)
                self.assertEqual(c.find_one({"_id": 7})["n"], 7)
                c.update_one({"_id": 1}, {"$set": {"u": 1}, "$inc": {"n": 10}})
                c.update_many({"n": {"$lt": 50}}, {"$set": {"small": True}})
                c.replace_one({"_id": 2}, {"replaced": True})
                c.update_one({"_id": "up"}, {"$setOnInsert": {"n": -1}}, upsert=True)
                c.find_one_and_update({"_id": 3}, {"$inc": {"n": 1}},
                                      return_document=ReturnDocument.AFTER)
                c.delete_one({"_id": 4})
                c.delete_many({"n": {"$gte": 2900}})
                self.assertEqual(sorted(c.distinct("tags")), [0, 1, 2, 3, 4])
                list(c.aggregate([{"$match": {"n": {"$lt": 500}}},
                                  {"$group": {"_id": "$small", "total": {"$sum": "$n"}}}]))
                c.bulk_write([pymongo.InsertOne({"_id": "b1"}), pymongo.InsertOne({"_id": "b2"}),
                              pymongo.UpdateOne({"_id": "b1"}, {"$set": {"x": 1}}),
                              pymongo.DeleteOne({"_id": "b2"}),
                              pymongo.ReplaceOne({"_id": "b1"}, {"y": 2})], ordered=False)
                c.create_index("n")
                list(c.list_indexes())
                db.list_collection_names()
                client.list_database_names()
                # getMore then killCursors: a cursor closed half-way.
                cur = c.find({}).batch_size(10)
                for _ in range(25):
                    next(cur)
                cur.close()
                # Exhaust cursor.
                got = list(c.find({}, cursor_type=CursorType.EXHAUST).batch_size(50))
                self.assertGreater(len(got), 2000)
                # w:0 writes (moreToCome), then a normal read to settle them.
                w0 = c.with_options(write_concern=WriteConcern(w=0))
                for i in range(40):
                    w0.insert_one({"_id": f"w0-{i}", "n": i})
                w0.update_many({"_id": {"$in": ["w0-1", "w0-2"]}}, {"$set": {"z": 1}})
                w0.delete_one({"_id": "w0-3"})
                w0.insert_many([{"_id": f"w0m-{i}"} for i in range(100)], ordered=False)
                wait_for(lambda: c.find_one({"_id": "w0m-99"}) is not None,
                         "the w:0 inserts applied")
                # Sessions: explicit lsid on commands, then endSessions at close.
                with client.start_session() as s:
                    c.find_one({"_id": 5}, session=s)
                    c.insert_one({"_id": "sess"}, session=s)
                    client.admin.command("refreshSessions", [s.session_id])
                for cmd in ("ping", "buildInfo", "connectionStatus", "whatsmyuri",
                            "listDatabases"):
                    client.admin.command(cmd)
                client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
                client.admin.command({"killCursors": "c", "cursors": [Int64(12345)]})
                # An error reply (unknown command) goes through as well.
                with self.assertRaises(pymongo.errors.OperationFailure):
                    db.command("noSuchCommand")
                # Streaming hello: awaited replies keep coming while the
                # workload is over (heartbeatFrequencyMS 500).
                def awaited():
                    return client.admin.command("serverStatus")["varanusStub"]["awaitedHelloOut"]
                wait_for(lambda: awaited() >= status0["awaitedHelloOut"] + 2,
                         "two awaited hello replies")
                if compressor != "none":
                    now = client.admin.command("serverStatus")["varanusStub"]
                    self.assertGreater(now["compressedIn"][compressor],
                                       status0["compressedIn"][compressor],
                                       f"{compressor} was used")
            finally:
                client.close()
        return work

    def test_pymongo_no_compression(self):
        self.run_through("pymongo-none", self.pymongo_workload("none"),
                         expect_ops=("OP_MSG", "OP_MSG moreToCome", "OP_MSG exhaustAllowed"))

    def test_pymongo_snappy(self):
        self.run_through("pymongo-snappy", self.pymongo_workload("snappy"),
                         expect_ops=("OP_COMPRESSED(OP_MSG, snappy)",))

    def test_pymongo_zlib(self):
        self.run_through("pymongo-zlib", self.pymongo_workload("zlib"),
                         expect_ops=("OP_COMPRESSED(OP_MSG, zlib)",))

    def test_pymongo_zstd(self):
        self.run_through("pymongo-zstd", self.pymongo_workload("zstd"),
                         expect_ops=("OP_COMPRESSED(OP_MSG, zstd)",))

    # ------------------------------------------------------------ raw frames
    def raw_legacy(self, chain):
        from bson import Int64
        r = Raw(chain.address)
        try:
            hello = r.legacy_command("admin", {"isMaster": 1, "client": {"application": {
                "name": "transparency-raw"}}, "compression": ["snappy", "zlib", "zstd"]})
            self.assertEqual(hello["ok"], 1.0)
            self.assertEqual(hello["compression"], ["snappy", "zlib", "zstd"])
            r.command({"drop": "legacy", "$db": "raw"})
            reply = r.command({"insert": "legacy", "$db": "raw"},
                              sequences=[("documents", [{"_id": i, "v": "x" * (i % 30)}
                                                        for i in range(500)])])
            self.assertEqual(reply["n"], 500)
            # OP_QUERY on a collection, OP_GET_MORE, OP_KILL_CURSORS.
            rid = r.query("raw.legacy", {"$query": {}, "$orderby": {"_id": 1}}, n_return=50)
            to, op, _, docs, cursor = r.recv()
            self.assertEqual((to, op, len(docs)), (rid, 1, 50))
            self.assertNotEqual(cursor, 0)
            rid = r.get_more("raw.legacy", 100, cursor)
            to, _, _, docs, cursor = r.recv()
            self.assertEqual((to, len(docs)), (rid, 100))
            r.kill_cursors([cursor])
            # OP_QUERY with the Exhaust flag: OP_REPLYs until cursor id 0.
            rid = r.query("raw.legacy", {}, n_return=60, flags=1 << 6)
            seen = 0
            while True:
                to, _, _, docs, cursor = r.recv()
                seen += len(docs)
                if cursor == 0:
                    break
            self.assertEqual(seen, 500)
            # OP_INSERT / OP_UPDATE / OP_DELETE: ignored by a 6.0 server.
            r.legacy_write(2002, "raw.legacy", {"_id": "op_insert"}, {"_id": "op_insert2"})
            r.legacy_write(2001, "raw.legacy", {"_id": 1}, {"$set": {"u": 1}})
            r.legacy_write(2006, "raw.legacy", {"_id": 2})
            self.assertEqual(r.command({"ping": 1, "$db": "admin"})["ok"], 1.0)
            # OP_COMPRESSED with each compressor, around OP_MSG and OP_QUERY.
            for comp in (1, 2, 3):
                reply = r.command({"find": "legacy", "filter": {"_id": {"$lt": 40}},
                                   "$db": "raw"}, compressor=comp)
                self.assertEqual(len(reply["cursor"]["firstBatch"]), 40)
                reply = r.legacy_command("admin", {"ping": 1}, compressor=comp)
                self.assertEqual(reply["ok"], 1.0)
            # OP_MSG with a checksum.
            self.assertEqual(r.command({"ping": 1, "$db": "admin"}, checksum=True)["ok"], 1.0)
            # moreToCome (w:0): applied, never answered.
            for i in range(5):
                r.msg({"insert": "legacy", "writeConcern": {"w": 0}, "$db": "raw"},
                      flags=MORE_TO_COME, sequences=[("documents", [{"_id": f"w0-{i}"}])])
            r.msg({"update": "legacy", "writeConcern": {"w": 0}, "$db": "raw",
                   "updates": [{"q": {"_id": "w0-0"}, "u": {"$set": {"z": 1}}}]},
                  flags=MORE_TO_COME, compressor=3)
            reply = r.command({"count": "legacy", "query": {"_id": {"$in": [
                f"w0-{i}" for i in range(5)]}}, "$db": "raw"})
            self.assertEqual(reply["n"], 5)
            # OP_MSG exhaust getMore: moreToCome replies until cursor id 0.
            reply = r.command({"find": "legacy", "batchSize": 7, "$db": "raw"})
            rid = r.msg({"getMore": Int64(reply["cursor"]["id"]), "collection": "legacy",
                         "batchSize": 40, "$db": "raw"}, flags=EXHAUST_ALLOWED)
            batches = 0
            while True:
                _, _, flags, docs, _ = r.recv()
                batches += 1
                if not flags & MORE_TO_COME:
                    self.assertEqual(docs[0]["cursor"]["id"], 0)
                    break
            self.assertGreater(batches, 5)
            # Sessions and transactions as far as the stub goes.
            lsid = {"id": self.bson.Binary(os.urandom(16), 4)}
            r.command({"find": "legacy", "filter": {"_id": 1}, "lsid": lsid, "$db": "raw"})
            r.command({"commitTransaction": 1, "lsid": lsid, "txnNumber": Int64(1),
                       "autocommit": False, "$db": "admin"})
            r.command({"abortTransaction": 1, "lsid": lsid, "txnNumber": Int64(2),
                       "autocommit": False, "$db": "admin"})
            r.command({"endSessions": [lsid], "$db": "admin"})
            # Errors shaped as mongod's.
            self.assertEqual(r.command({"noSuchCommand": 1, "$db": "raw"})["code"], 59)
            reply = r.command({"insert": "legacy", "documents": [{"_id": 1}], "$db": "raw"})
            self.assertEqual(reply["writeErrors"][0]["code"], 11000)
        finally:
            r.close()
        # A streaming hello with exhaustAllowed: three replies, then the
        # client hangs up with the next one unread.
        r = Raw(chain.address)
        try:
            hello = r.command({"hello": 1, "$db": "admin"})
            r.msg({"hello": 1, "topologyVersion": hello["topologyVersion"],
                   "maxAwaitTimeMS": 100, "$db": "admin"}, flags=EXHAUST_ALLOWED)
            for _ in range(3):
                _, _, flags, docs, _ = r.recv()
                self.assertTrue(flags & MORE_TO_COME)
        finally:
            r.close()
        # OP_COMMAND (3.2-era): the stub closes the connection on it.
        r = Raw(chain.address)
        try:
            self.assertEqual(r.command({"ping": 1, "$db": "admin"})["ok"], 1.0)
            body = (b"admin\x00ping\x00" + self.bson.encode({"ping": 1}) + self.bson.encode({}))
            r.send(2010, body)
            r.sock.settimeout(10)
            self.assertEqual(r.sock.recv(100), b"", "the stub closes on OP_COMMAND")
        finally:
            r.close()

    def test_raw_frames_of_every_opcode(self):
        self.run_through("raw-opcodes", self.raw_legacy, expect_ops=(
            "OP_QUERY", "OP_REPLY", "OP_GET_MORE", "OP_KILL_CURSORS", "OP_INSERT", "OP_UPDATE",
            "OP_DELETE", "OP_COMMAND", "OP_MSG checksum", "OP_MSG moreToCome",
            "OP_MSG exhaustAllowed", "OP_COMPRESSED(OP_MSG, snappy)",
            "OP_COMPRESSED(OP_MSG, zlib)", "OP_COMPRESSED(OP_MSG, zstd)",
            "OP_COMPRESSED(OP_QUERY, zstd)", "OP_COMPRESSED(OP_REPLY, snappy)"))

    # ------------------------------------------------------------ 48 MB
    def large_messages(self, chain):
        from pymongo import MongoClient
        limit = 48_000_000
        # Raw: one OP_MSG insert of exactly maxMessageSizeBytes, 46 documents
        # of random bytes in a kind-1 sequence.
        r = Raw(chain.address, timeout=120)
        try:
            r.command({"drop": "big", "$db": "large"})
            docs = [{"_id": i, "b": self.bson.Binary(os.urandom(1_000_000))} for i in range(46)]
            head = struct.pack("<I", 0) + b"\x00" + self.bson.encode({"insert": "big",
                                                                       "$db": "large"})
            size = 16 + len(head) + 1 + 4 + len(b"documents\x00") + sum(
                len(self.bson.encode(d)) for d in docs)
            pad = limit - size
            docs[-1]["pad"] = "p" * (pad - len(self.bson.encode({"pad": ""})) + 5)
            r.msg({"insert": "big", "$db": "large"}, sequences=[("documents", docs)])
            _, _, _, reply, _ = r.recv()
            self.assertEqual(reply[0].get("n"), 46, reply[0])
            self.assertEqual(reply[0]["n"], 46)
        finally:
            r.close()
        # PyMongo: batches split at maxMessageSizeBytes, a 16 MiB document,
        # and the reads back (replies of up to 16 MiB a batch); once plain,
        # once with zstd on compressible bytes (47 MB inflating from ~50 kB).
        for comp in ("none", "zstd"):
            opts = {"compressors": comp} if comp != "none" else {}
            client = MongoClient(chain.uri(**opts), serverSelectionTimeoutMS=10000,
                                 socketTimeoutMS=120000)
            try:
                c = client.large[f"py_{comp}"]
                c.drop()
                filler = (lambda n: os.urandom(n)) if comp == "none" else (lambda n: b"z" * n)
                c.insert_many([{"_id": i, "b": filler(1_000_000)} for i in range(60)])
                c.insert_one({"_id": "max", "b": filler(16 * 1024 * 1024 - 100)})
                got = sum(len(d["b"]) for d in c.find({}))
                self.assertEqual(got, 60 * 1_000_000 + 16 * 1024 * 1024 - 100)
            finally:
                client.close()

    def test_messages_up_to_48_mb(self):
        totals, _ = self.run_through("large-messages", self.large_messages)
        self.assertGreater(totals["bytes client->server"], 2 * 48_000_000)
        self.assertEqual(totals["largest message"], 48_000_000)

    # ------------------------------------------------------------ 200 at once
    def many_connections(self, chain, n=200):
        """n sockets open at once (a barrier), each running a short mixed
        script: handshake, insert, find + getMore, w:0, compressed ping,
        legacy query, exhaust getMore."""
        from bson import Int64
        barrier = threading.Barrier(n, timeout=60)
        errors = []

        def one(i):
            try:
                r = Raw(chain.address, timeout=60)
            except OSError as e:
                errors.append(f"{i}: connect: {e}")
                barrier.abort()
                return
            try:
                barrier.wait()
                r.legacy_command("admin", {"isMaster": 1, "compression": ["snappy", "zlib",
                                                                          "zstd"]})
                coll = f"c{i % 7}"
                r.command({"insert": coll, "$db": "many"},
                          sequences=[("documents", [{"i": i, "k": k} for k in range(20)])])
                reply = r.command({"find": coll, "filter": {"i": i}, "batchSize": 5,
                                   "$db": "many"})
                cursor = reply["cursor"]["id"]
                reply = r.command({"getMore": Int64(cursor), "collection": coll, "batchSize": 5,
                                   "$db": "many"})
                r.msg({"insert": coll, "writeConcern": {"w": 0}, "$db": "many"},
                      flags=MORE_TO_COME, sequences=[("documents", [{"i": i, "w0": True}])])
                comp = 1 + i % 3
                r.command({"ping": 1, "$db": "admin"}, compressor=comp)
                rid = r.query(f"many.{coll}", {"i": i}, n_return=4)
                to, _, _, docs, cursor = r.recv()
                if to != rid or len(docs) != 4:
                    raise AssertionError(f"legacy query: {to} {rid} {len(docs)}")
                r.kill_cursors([cursor])
                reply = r.command({"find": coll, "filter": {"i": i}, "batchSize": 3,
                                   "$db": "many"})
                r.msg({"getMore": Int64(reply["cursor"]["id"]), "collection": coll,
                       "batchSize": 3, "$db": "many"}, flags=EXHAUST_ALLOWED, compressor=comp)
                while True:
                    _, _, flags, docs, _ = r.recv()
                    if not flags & MORE_TO_COME:
                        break
                if r.command({"count": coll, "query": {"i": i}, "$db": "many"})["n"] != 21:
                    raise AssertionError("count")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{i}: {type(e).__name__}: {e}")
                barrier.abort()
            finally:
                r.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse([t for t in threads if t.is_alive()], "clients finished")
        self.assertFalse(errors, "\n".join(errors[:10]))

    def test_200_connections_at_once(self):
        totals, _ = self.run_through("200-connections", self.many_connections)
        self.assertEqual(totals["connections"], 200)

    # ------------------------------------------------------------ Node.js
    def test_node_driver(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node not found (scripts/install-deps.sh installs it)")
        script = os.path.join(HERE, "..", "integration", "node", "workload.js")
        self.assertTrue(os.path.isdir(os.path.join(os.path.dirname(script), "node_modules")),
                        "the pinned Node driver is not installed: bash scripts/setup-node.sh")
        for comp in ("none", "snappy", "zlib", "zstd"):
            def work(chain, comp=comp):
                run = subprocess.run([node, script, f"mongodb://{chain.address}/", comp],
                                     capture_output=True, text=True, timeout=180)
                self.assertEqual(run.returncode, 0,
                                 f"workload.js {comp}:\n{run.stdout}\n{run.stderr}")
            expect = () if comp == "none" else (f"OP_COMPRESSED(OP_MSG, {comp})",)
            # A stub of its own: workload.js checks the stub's counters from zero.
            with start_stub(STUB) as stub:
                self.run_through(f"node-{comp}", work, expect_ops=expect, stub_addr=stub.address)

    # ------------------------------------------------------------ varanus-bench
    def test_varanus_bench_smoke(self):
        """varanus-bench --smoke (the project's load client: ping latency,
        find/insert mix, 1 MB inserts, getMore, churn, the large message,
        and libmongoc's ping and mix) against a varanus wrapped in taps."""
        rec = os.path.join(self.tmp, "bench")
        os.makedirs(rec)
        wrapper = os.path.join(self.tmp, "varanus-tapped")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} {os.path.abspath(__file__)} '
                    f'--wrap-varanus {PROXY} {rec} "$@"\n')
        os.chmod(wrapper, 0o755)
        run = subprocess.run([BENCH, "--smoke", "--varanus", wrapper, "--stub", STUB,
                              ],
                             capture_output=True, text=True, timeout=600)
        self.assertEqual(run.returncode, 0, f"varanus-bench:\n{run.stdout}\n{run.stderr}")
        runs = sorted(os.path.join(rec, d) for d in os.listdir(rec) if d.startswith("run-"))
        self.assertTrue(runs, "varanus-bench started the wrapped varanus")
        all_problems, grand, grand_ops = [], collections.Counter(), collections.Counter()
        for r in runs:
            wait_for(lambda: os.path.exists(os.path.join(r, "done")), f"{r} recorded", 90)
            with open(os.path.join(r, "varanus.rc")) as f:
                self.assertEqual(f.read(), "0", "varanus exited 0")
            with open(os.path.join(r, "tapA", "index.json")) as fa, \
                    open(os.path.join(r, "tapB", "index.json")) as fb:
                problems, totals, ops = compare(json.load(fa), json.load(fb), health_checks=(
                    os.path.exists(os.path.join(r, "admin"))))
            all_problems += problems
            grand["largest message"] = max(grand["largest message"],
                                           totals.pop("largest message", 0))
            grand.update(totals)
            grand_ops.update(ops)
        sys.stderr.write(f"\n[varanus-bench] {len(runs)} varanus run(s); "
                         + ", ".join(f"{k} {v:,}" for k, v in grand.items())
                         + "\n[varanus-bench] opcodes: "
                         + ", ".join(f"{k} {v:,}" for k, v in sorted(grand_ops.items())) + "\n")
        self.assertFalse(all_problems, "varanus-bench: the bytes differ across varanus:\n"
                         + "\n".join(all_problems))
        self.assertGreater(grand["connections"], 100, "the churn went through the taps")
        self.assertGreater(grand["largest message"], 7_000_000, "the large message")
        largest = grand.pop("largest message")
        GRAND["largest message"] = max(GRAND["largest message"], largest)
        GRAND.update(grand)
        GRAND["workloads"] += 1
        GRAND_OPS.update(grand_ops)
        shutil.rmtree(rec, ignore_errors=True)

    # ------------------------------------------------------------ the harness itself
    def test_harness_reports_a_changed_byte_and_a_missing_connection(self):
        """compare() on records that differ: one byte changed at offset
        70,000 of a 100,000-byte stream, and one extra upstream connection."""
        d = tempfile.mkdtemp(dir=self.tmp)
        data = bytearray(os.urandom(100_000))
        files = iter(range(1 << 30))

        def record(number, up, down=b"reply"):
            recs = {}
            for name, b in (("up", up), ("down", down)):
                path = os.path.join(d, f"stream-{next(files)}")
                with open(path, "wb") as f:
                    f.write(b)
                recs[name] = {"file": path, "offset": 0, "length": len(b),
                              "sha256": hashlib.sha256(b).hexdigest(), "messages": 1,
                              "largest": len(b), "ops": {"OP_MSG": 1}, "unparsed": False}
            return {"number": number, "end": "closed", **recs}

        same = record(1, b"same bytes")
        a = {"connections": [same, record(2, bytes(data))]}
        changed = bytearray(data)
        changed[70_000] ^= 0x20
        b = {"connections": [record(1, b"same bytes"), record(2, bytes(changed)),
                             record(3, b"")]}
        problems, totals, _ = compare(a, b)
        text = "\n".join(problems)
        self.assertIn("2 connections at tapA (client side), 3 at tapB", text)
        self.assertIn("first difference at offset 70000", text)
        self.assertIn(f"{70_000 - 70_000 % 16:10d}", text)  # the hex window's row
        self.assertIn("down: equal (5 bytes)", text)
        self.assertIn("tapB connection #3 has no tapA counterpart", text)
        self.assertEqual(totals["connections"], 2)
        # Equal records: nothing to report; an empty extra one is a health
        # check only when the run had an admin endpoint.
        self.assertEqual(compare(a, {"connections": [record(1, b"same bytes"),
                                                     record(2, bytes(data))]})[0], [])
        extra = {"connections": [record(1, b"same bytes"), record(2, bytes(data)),
                                 record(3, b"", b"")]}
        self.assertTrue(compare(a, extra)[0])
        self.assertEqual(compare(a, extra, health_checks=True)[0], [])

    # ------------------------------------------------------------ long and mixed
    def test_long_mixed_workload(self):
        """Four PyMongo clients at once (none, snappy, zlib, zstd), four
        threads each, a seeded random mix of reads, writes, w:0, exhaust and
        aggregates for VARANUS_TRANSPARENCY_SECONDS (default 20)."""
        import random
        import pymongo
        from pymongo import CursorType, MongoClient
        from pymongo.write_concern import WriteConcern
        seconds = float(os.environ.get("VARANUS_TRANSPARENCY_SECONDS", "20"))

        def work(chain):
            clients = []
            for comp in ("none", "snappy", "zlib", "zstd"):
                opts = {"heartbeatFrequencyMS": "500", "appName": f"long-{comp}",
                        "maxPoolSize": "4"}
                if comp != "none":
                    opts["compressors"] = comp
                clients.append(MongoClient(chain.uri(**opts), serverSelectionTimeoutMS=10000))
            errors, ops = [], collections.Counter()
            deadline = time.monotonic() + seconds

            def worker(client, seed):
                rnd = random.Random(seed)
                c = client.long[f"c{seed % 3}"]
                w0 = c.with_options(write_concern=WriteConcern(w=0))
                n = 0
                try:
                    while time.monotonic() < deadline:
                        n += 1
                        k = rnd.randrange(12)
                        key = f"{seed}-{n}"
                        if k == 0:
                            c.insert_many([{"s": seed, "n": n, "i": i, "pad": "p" * rnd.randrange(
                                2000)} for i in range(rnd.randrange(1, 200))])
                        elif k == 1:
                            c.insert_one({"_id": key, "s": seed})
                        elif k == 2:
                            list(c.find({"s": seed}).batch_size(rnd.randrange(1, 50)).limit(300))
                        elif k == 3:
                            c.update_many({"s": seed, "n": {"$lt": n}}, {"$inc": {"u": 1}})
                        elif k == 4:
                            c.delete_many({"s": seed, "n": {"$lt": n - 50}})
                        elif k == 5:
                            w0.insert_one({"_id": "w0-" + key, "s": seed})
                        elif k == 6:
                            list(c.find({"s": seed, "n": {"$gt": n - 10}},
                                        cursor_type=CursorType.EXHAUST)
                                 .batch_size(rnd.randrange(1, 30)))
                        elif k == 7:
                            list(c.aggregate([{"$match": {"s": seed}},
                                              {"$group": {"_id": "$n", "c": {"$sum": 1}}}]))
                        elif k == 8:
                            c.count_documents({"s": seed})
                        elif k == 9:
                            c.bulk_write([pymongo.InsertOne({"_id": "b-" + key}),
                                          pymongo.UpdateOne({"_id": "b-" + key},
                                                            {"$set": {"x": n}}),
                                          pymongo.DeleteOne({"_id": "b-" + key})])
                        elif k == 10:
                            c.find_one_and_update({"s": seed}, {"$inc": {"f": 1}})
                        else:
                            client.admin.command("ping")
                        ops[k] += 1
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(f"worker {seed}: {type(e).__name__}: {e}")

            threads = [threading.Thread(target=worker, args=(cl, 4 * i + j))
                       for i, cl in enumerate(clients) for j in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(seconds + 120)
            for cl in clients:
                cl.close()
            self.assertFalse(errors, "\n".join(errors[:10]))
            self.assertEqual(len(ops), 12, f"every kind of operation ran: {dict(ops)}")
            sys.stderr.write(f"\n[long-mixed] {sum(ops.values()):,} operations in {seconds:g} s\n")

        self.run_through("long-mixed", work, expect_ops=(
            "OP_MSG", "OP_COMPRESSED(OP_MSG, snappy)", "OP_COMPRESSED(OP_MSG, zlib)",
            "OP_COMPRESSED(OP_MSG, zstd)", "OP_QUERY", "OP_REPLY", "OP_MSG moreToCome"))

    # ------------------------------------------------------------ a replica-set member
    def test_replica_set_member_relayed_unchanged(self):
        """A HOST:PORT upstream that is a replica-set member: varanus is not
        in replica-set mode, so its hello replies (setName, hosts, primary,
        me: the member's own address) reach the driver byte for byte.
        (Rewriting them is replica-set mode's business, which varanus refuses
        at start-up for now: README, "The upstream as a connection string".)"""
        from pymongo import MongoClient

        with start_stub(STUB, "--replset", "rs0", "--members", "1") as member:
            def work(chain):
                client = MongoClient(chain.uri(heartbeatFrequencyMS="500"),
                                     serverSelectionTimeoutMS=10000)
                try:
                    hello = client.admin.command("hello")
                    self.assertEqual(hello["setName"], "rs0")
                    self.assertEqual(hello["me"], member.address)
                    self.assertEqual(hello["hosts"], [member.address])
                    client.rs.c.insert_many([{"i": i} for i in range(100)])
                    self.assertEqual(client.rs.c.count_documents({}), 100)
                finally:
                    client.close()
            self.run_through("replica-set-member", work, stub_addr=member.address)

    def test_harness_catches_a_relay_that_changes_one_byte(self):
        """tapA -> a relay that flips one bit of the client's bytes -> tapB ->
        the stub: the taps and the pairing report it, with its offset."""
        d = os.path.join(self.tmp, "corrupting")
        tap_b = TapProcess(STUB_ADDR, os.path.join(d, "tapB"))
        doc = {"ping": 1, "comment": "a" * 64, "$db": "admin"}
        at = 16 + 5 + self.bson.encode(doc).index(b"a" * 64) + 10
        os.makedirs(os.path.join(d, "relay"))
        relay = CorruptingRelay(tap_b.address, os.path.join(d, "relay"), at)
        thread = threading.Thread(target=relay.run, daemon=True)
        thread.start()
        tap_a = TapProcess(relay.address(), os.path.join(d, "tapA"))
        try:
            r = Raw(tap_a.address)
            try:
                self.assertEqual(r.command(doc)["ok"], 1.0)  # 'aaaAaa': still a ping
            finally:
                r.close()
        finally:
            index_a = tap_a.stop()
            relay.stopping = True
            thread.join(DRAIN_SECONDS + 10)
            index_b = tap_b.stop()
        problems, totals, _ = compare(index_a, index_b)
        text = "\n".join(problems)
        self.assertIn("1 tapA streams without an equal at tapB", text)
        self.assertIn(f"up: client -> varanus {totals['bytes client->server']} bytes, "
                      f"varanus -> stub {totals['bytes client->server']} bytes; "
                      f"first difference at offset {at}", text)
        self.assertIn("down: equal", text)
        self.assertIn("61 61 61", text)  # the hex window: 'aaa' on one side ...
        self.assertIn("41 61 61", text)  # ... and 'Aaa' on the other


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--tap":
        return tap_main(sys.argv[2], sys.argv[3])
    if len(sys.argv) >= 2 and sys.argv[1] == "--wrap-varanus":
        return wrap_main(sys.argv[2], sys.argv[3], sys.argv[4:])
    global PROXY, STUB, STUB_ADDR, BENCH
    PROXY, STUB, BENCH = sys.argv[1], sys.argv[2], sys.argv[3]
    with start_stub(STUB) as stub:
        STUB_ADDR = stub.address
        prog = unittest.main(argv=[sys.argv[0]] + sys.argv[4:], exit=False)
    sys.stderr.write("\ntransparency totals: " + ", ".join(
        f"{k} {v:,}" for k, v in GRAND.items()) + "\ntransparency opcodes: " + ", ".join(
        f"{k} {v:,}" for k, v in sorted(GRAND_OPS.items())) + "\n")
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
