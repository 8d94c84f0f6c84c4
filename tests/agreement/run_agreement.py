#!/usr/bin/python3
"""One agreement run: stub upstream + varanus + a real driver, then compare.

    run_agreement.py --driver pymongo|node|mongoc --variant VARIANT \
        --varanus BIN --stub BIN --work-dir DIR [--node-dir DIR] [--mongoc-apm BIN]

Starts the stub and varanus on port 0 (varanus --upstream = the stub), runs
the variant's workload through varanus while the driver's own command
monitoring records its events, waits for varanus to report every connection
closed, stops varanus with SIGTERM (exit status 0 required), then compares
the two recordings with agree.py and checks what the variant is about
(compression negotiated, exhaust streamed, w:0 unacknowledged, ...).

Variants: plain, zlib, snappy, zstd, exhaust, w0, failed, dupkey, sasl.
Artifacts (both recordings, varanus's stderr) stay in --work-dir.
Must run under /usr/bin/python3: PyMongo 3.11 is Debian's python3-pymongo.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import agree  # noqa: E402

VARIANTS = ("plain", "zlib", "snappy", "zstd", "exhaust", "w0", "failed", "dupkey", "sasl")
COMPRESSORS = ("zlib", "snappy", "zstd")
# Never compressed (OP_COMPRESSED spec): their requests go out plain.
NEVER_COMPRESSED = {"hello", "ismaster", "saslstart", "saslcontinue", "getnonce", "authenticate",
                    "createuser", "updateuser", "copydbsaslstart", "copydbgetnonce", "copydb"}
HEARTBEAT_MS = 500   # the drivers' minimum: heartbeats come quickly
DEADLINE_S = 15.0    # any single wait


class Failure(Exception):
    pass


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

class Proc:
    """A child process whose address is announced on one of its streams.

    The stub prints its address as its first stdout line; varanus prints
    `varanus: listening on ADDR, upstream ...` on stderr and its events on
    stdout, which goes to a file here."""

    def __init__(self, name: str, argv: list[str], work_dir: str, address_from: str,
                 stdout_path: str | None = None):
        self.name = name
        self.argv = argv
        self.stderr_path = os.path.join(work_dir, f"{name}.stderr")
        self._stdout_file = open(stdout_path, "wb") if stdout_path else None
        self._stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL,
            stdout=self._stdout_file or subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.address = None
        self._found = threading.Event()
        self._lines: list[str] = []
        stream = self.proc.stderr if address_from == "stderr" else self.proc.stdout
        pattern = (re.compile(r"listening on (\S+?),") if address_from == "stderr"
                   else re.compile(r"^(\S+:\d+)\s*$"))
        threading.Thread(target=self._read, args=(stream, pattern, address_from), daemon=True).start()
        if address_from != "stderr":
            threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        if not self._found.wait(DEADLINE_S) or self.address is None:
            self.kill()
            raise Failure(f"{name} did not announce its address within {DEADLINE_S}s "
                          f"(exit {self.proc.poll()}); {argv}\n{self.stderr_text()[-2000:]}")

    def _read(self, stream, pattern, which):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            if which == "stderr":
                self._stderr_file.write(raw)
                self._stderr_file.flush()
            if self.address is None:
                m = pattern.search(line)
                if m:
                    self.address = m.group(1)
                    self._found.set()
        self._found.set()

    def _drain(self, stream):
        for raw in iter(stream.readline, b""):
            self._stderr_file.write(raw)
            self._stderr_file.flush()

    def stderr_text(self) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def terminate(self, timeout: float = DEADLINE_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"{self.name} did not exit within {timeout}s of SIGTERM")
        if self._stdout_file:
            self._stdout_file.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_stub(stub_bin: str, work_dir: str) -> Proc:
    return Proc("stub", [stub_bin, "--listen", "127.0.0.1:0"], work_dir, "stdout")


def start_varanus(varanus_bin: str, upstream: str, work_dir: str, events_path: str,
                  notes: list[str]) -> Proc:
    base = [varanus_bin, "--listen", "127.0.0.1:0", "--upstream", upstream]
    try:
        return Proc("varanus", base + ["--max-document-length", "0"], work_dir, "stderr", events_path)
    except Failure as exc:
        if "max-document-length" not in str(exc):
            raise
        notes.append("varanus does not accept --max-document-length yet: documents may be cut at "
                     "1000 characters")
        return Proc("varanus", base, work_dir, "stderr", events_path)


def wait_until(predicate, what: str, timeout: float = DEADLINE_S, poll: float = 0.02):
    """Polls `predicate` until it holds; raises Failure naming `what` at the deadline."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > end:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def read_events_tolerant(path: str) -> list[dict]:
    """varanus's events so far (the last line may still be being written)."""
    try:
        return agree.load_jsonl(path, strict=False)
    except (OSError, ValueError):
        return []


def connections_balanced(path: str) -> bool:
    ev = read_events_tolerant(path)
    opened = sum(1 for e in ev if e.get("event") == "connectionOpened")
    closed = sum(1 for e in ev if e.get("event") == "connectionClosed")
    return opened > 0 and opened == closed


# --------------------------------------------------------------------------
# PyMongo (in process)
# --------------------------------------------------------------------------

def run_pymongo(variant: str, address: str, out_path: str) -> list[dict]:
    import pymongo
    from bson import json_util
    from pymongo import monitoring

    def relaxed(doc):
        return json.loads(json_util.dumps(doc, json_options=json_util.RELAXED_JSON_OPTIONS))

    events: list[dict] = []
    heartbeats = []

    class Commands(monitoring.CommandListener):
        # PyMongo 3.11 publishes the further batches of an exhaust cursor with
        # requestId 0 (server.py: `request_id = 0` when nothing is sent).
        def started(self, e):
            events.append({"event": "commandStarted", "requestId": e.request_id,
                           "commandName": e.command_name, "databaseName": e.database_name,
                           "command": relaxed(e.command), "connection": "%s:%s" % e.connection_id,
                           "synthetic": e.request_id == 0})

        def succeeded(self, e):
            events.append({"event": "commandSucceeded", "requestId": e.request_id,
                           "commandName": e.command_name, "reply": relaxed(e.reply),
                           "durationMicros": e.duration_micros,
                           # two datetime.now() differences, each truncated to 1 us
                           "durationResolutionMicros": 2, "connection": "%s:%s" % e.connection_id})

        def failed(self, e):
            events.append({"event": "commandFailed", "requestId": e.request_id,
                           "commandName": e.command_name, "failure": relaxed(e.failure),
                           "durationMicros": e.duration_micros, "durationResolutionMicros": 2,
                           "connection": "%s:%s" % e.connection_id})

    class Heartbeats(monitoring.ServerHeartbeatListener):
        def started(self, e):
            pass

        def succeeded(self, e):
            heartbeats.append(e)

        def failed(self, e):
            pass

    host, port = address.rsplit(":", 1)
    kw = dict(event_listeners=[Commands(), Heartbeats()], heartbeatFrequencyMS=HEARTBEAT_MS,
              appname=f"agree-pymongo-{variant}", serverSelectionTimeoutMS=5000,
              connectTimeoutMS=5000, socketTimeoutMS=10000, retryWrites=False, retryReads=False,
              directConnection=True)
    if variant in COMPRESSORS:
        kw["compressors"] = variant
    client = pymongo.MongoClient(host, int(port), **kw)
    try:
        db = client.agree
        coll = db.things
        if variant in ("plain",) + COMPRESSORS:
            coll.insert_many([{"_id": i, "x": i, "s": "é" * i} for i in range(1, 6)])
            docs = list(coll.find({}, batch_size=2))
            if len(docs) < 3:
                raise Failure(f"find returned {len(docs)} documents, the workload needs a getMore")
            coll.update_one({"_id": 1}, {"$set": {"x": 10}})
            coll.delete_one({"_id": 5})
        elif variant == "exhaust":
            coll.insert_many([{"_id": i, "x": i} for i in range(1, 8)])
            docs = list(coll.find({}, batch_size=2, cursor_type=pymongo.CursorType.EXHAUST))
            if len(docs) < 5:
                raise Failure(f"exhaust find returned {len(docs)} documents, expected several batches")
        elif variant == "w0":
            w0 = coll.with_options(write_concern=pymongo.WriteConcern(w=0))
            w0.insert_one({"_id": 1, "x": 1})
            w0.insert_many([{"_id": 2}, {"_id": 3}])
            w0.update_one({"_id": 1}, {"$set": {"x": 2}})
            w0.delete_one({"_id": 3})
            coll.find_one({"_id": 1})  # an acknowledged command after them
        elif variant == "failed":
            try:
                db.command("frobnicate")
                raise Failure("the unknown command frobnicate succeeded")
            except pymongo.errors.OperationFailure as exc:
                if exc.code != 59:
                    raise Failure(f"frobnicate failed with code {exc.code}, expected 59") from None
        elif variant == "dupkey":
            coll.insert_one({"_id": 1, "x": 1})
            try:
                coll.insert_one({"_id": 1, "x": 2})
                raise Failure("the duplicate insert succeeded")
            except pymongo.errors.DuplicateKeyError:
                pass
        elif variant == "sasl":
            try:
                client.admin.command("saslStart", mechanism="SCRAM-SHA-256",
                                     payload=b"n,,n=agree,r=c2VjcmV0bm9uY2U=", autoAuthorize=1)
                raise Failure("saslStart succeeded against the stub")
            except pymongo.errors.OperationFailure as exc:
                if exc.code != 18:
                    raise Failure(f"saslStart failed with code {exc.code}, expected 18") from None
        # Heartbeats: the first check of each monitor is the handshake; wait
        # for later ones so varanus has heartbeat hellos to label.
        wait_until(lambda: len(heartbeats) >= 3, "three PyMongo server heartbeats")
    finally:
        client.close()
    with open(out_path, "w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    return events


# --------------------------------------------------------------------------
# Node.js and libmongoc (child processes writing JSON lines)
# --------------------------------------------------------------------------

def run_child(argv: list[str], out_path: str, env: dict | None = None) -> list[dict]:
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120, env=env)
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        raise Failure(f"workload {argv[0]} exited {p.returncode}:\n{p.stderr[-3000:]}")
    if p.stderr.strip():
        sys.stdout.write(p.stderr)
    return agree.load_jsonl(out_path)


def run_node(variant: str, address: str, out_path: str, node_dir: str) -> list[dict]:
    modules = os.path.join(node_dir, "node_modules")
    if not os.path.isdir(os.path.join(modules, "mongodb")):
        raise Failure(f"{modules}/mongodb missing: run scripts/setup-node.sh")
    env = dict(os.environ, NODE_PATH=modules)
    return run_child(["node", os.path.join(HERE, "node_workload.js"), f"mongodb://{address}/",
                      variant, out_path], out_path, env)


def run_mongoc(variant: str, address: str, out_path: str, apm_bin: str) -> list[dict]:
    return run_child([apm_bin, f"mongodb://{address}/", variant, out_path], out_path)


# --------------------------------------------------------------------------
# What each variant is about
# --------------------------------------------------------------------------

def variant_checks(driver: str, variant: str, r: agree.Result) -> list[str]:
    """Problems that would make the run prove less than its name says."""
    errs = []
    pairs = r.pairs
    names = lambda pred: [(d, v) for d, v in pairs if pred(d, v)]  # noqa: E731
    if variant in ("plain",) + COMPRESSORS:
        for n in ("insert", "find", "getMore", "update", "delete"):
            if not names(lambda d, v, n=n: d.name == n and d.outcome == "succeeded"):
                errs.append(f"no succeeded {n} compared")
    if variant in COMPRESSORS:
        compressible = names(lambda d, v: d.name.lower() not in NEVER_COMPRESSED)
        if not compressible:
            errs.append("no compressible command compared")
        for d, v in compressible:
            if v.started.get("compressor") != variant:
                errs.append(f"{d.name} requestId {d.request_id}: varanus compressor "
                            f"{v.started.get('compressor')!r}, expected {variant!r}")
    else:
        for d, v in pairs:
            if v.started.get("compressor"):
                errs.append(f"{d.name}: compressor {v.started['compressor']!r} without compression")
    if variant == "exhaust":
        if driver == "node":
            # Node 6 has no exhaust cursors; its exhaust stream is the
            # streaming SDAM monitor (awaited hellos the driver does not publish).
            awaited = [v for v in r.varanus_commands
                       if v.hello_label == "heartbeat" and v.flag("awaited") and v.flag("exhaust")]
            if len(awaited) < 2:
                errs.append(f"{len(awaited)} awaited exhaust heartbeats in varanus's events, expected >= 2")
        else:
            streamed = names(lambda d, v: d.name == "getMore" and v.flag("exhaust")
                             and (d.synthetic or driver == "mongoc"))
            if len(streamed) < 2:
                errs.append(f"{len(streamed)} exhaust getMore batches compared, expected >= 2")
            if not names(lambda d, v: d.name == "find" and v.flag("exhaust")):
                errs.append("no exhaust find compared")
    if variant == "w0":
        unacked = names(lambda d, v: bool(v.started.get("unacknowledged")))
        if len(unacked) < 3:
            errs.append(f"{len(unacked)} unacknowledged writes compared, expected >= 3")
    if variant == "failed":
        if not names(lambda d, v: d.outcome == "failed" and (v.terminal or {}).get("failure", {}).get("code") == 59):
            errs.append("no failed command with code 59 compared")
    if variant == "dupkey":
        if not names(lambda d, v: d.outcome == "succeeded"
                     and agree._write_error_codes((v.terminal or {}).get("reply")) == [11000]):
            errs.append("no insert succeeded with writeErrors [11000] compared")
    if variant == "sasl":
        sasl = names(lambda d, v: d.name.lower() == "saslstart")
        if not sasl:
            errs.append("no saslStart compared")
        for d, v in sasl:
            f = (v.terminal or {}).get("failure") or {}
            if not (v.started.get("redacted") and v.command == {} and d.outcome == "failed"
                    and f.get("code") == 18):
                errs.append(f"saslStart not failed+redacted with code 18 in varanus: {v.describe()}")
    return errs


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--driver", required=True, choices=("pymongo", "node", "mongoc"))
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument("--varanus", required=True)
    ap.add_argument("--stub", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--node-dir", default=os.path.join(HERE, "..", "integration", "node"))
    ap.add_argument("--mongoc-apm")
    a = ap.parse_args(argv)
    label = f"{a.driver}/{a.variant}"
    os.makedirs(a.work_dir, exist_ok=True)
    driver_path = os.path.join(a.work_dir, "driver-events.jsonl")
    varanus_path = os.path.join(a.work_dir, "varanus-events.jsonl")
    notes: list[str] = []
    stub = varanus = None
    try:
        stub = start_stub(a.stub, a.work_dir)
        varanus = start_varanus(a.varanus, stub.address, a.work_dir, varanus_path, notes)
        if a.driver == "pymongo":
            driver_events = run_pymongo(a.variant, varanus.address, driver_path)
        elif a.driver == "node":
            driver_events = run_node(a.variant, varanus.address, driver_path, a.node_dir)
        else:
            if not a.mongoc_apm:
                raise Failure("--mongoc-apm is required for the libmongoc driver")
            driver_events = run_mongoc(a.variant, varanus.address, driver_path, a.mongoc_apm)
        # The driver has closed its connections: varanus reports each closed
        # (an event, not a sleep) before it is asked to stop.
        try:
            wait_until(lambda: connections_balanced(varanus_path),
                       "varanus to report every connection it opened as closed", timeout=10)
        except Failure as exc:
            notes.append(f"{exc} (continuing: SIGTERM must still flush and close)")
        rc = varanus.terminate()
        if rc != 0:
            raise Failure(f"varanus exited {rc} after SIGTERM, expected 0\n{varanus.stderr_text()[-3000:]}")
        varanus_events = agree.load_jsonl(varanus_path)
    except Failure as exc:
        print(f"{label}: FAILED before comparing: {exc}")
        return 1
    finally:
        for p in (varanus, stub):
            if p is not None:
                try:
                    p.terminate(5)
                except Failure:
                    pass

    r = agree.compare(driver_events, varanus_events, label, expect_heartbeat=True)
    r.notes[:0] = notes
    for e in variant_checks(a.driver, a.variant, r):
        r.errors.append(f"variant {a.variant}: {e}")
    print(r.report())
    print(f"(recordings: {driver_path}, {varanus_path})")
    return 0 if r.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
