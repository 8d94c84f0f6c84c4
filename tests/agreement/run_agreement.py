#!/usr/bin/python3
"""One agreement run: stub upstream + varanus + a real driver, then compare.

    run_agreement.py --driver pymongo|node|mongoc --variant VARIANT \
        --varanus BIN --stub BIN --work-dir DIR [--node-dir DIR] [--mongoc-apm BIN] [--tls]

Starts the stub and varanus on port 0 (varanus --upstream = the stub), runs
the variant's workload through varanus while the driver's own command
monitoring records its events, waits for varanus to report every connection
closed, stops varanus with SIGTERM (exit status 0 required), then compares
the two recordings with agree.py and checks what the variant is about
(compression negotiated, exhaust streamed, w:0 unacknowledged, ...).

--tls: TLS on both legs. Certificates are made by tests/support/make_certs.sh
(tests/integration/tls_certs.py, a temporary directory); the stub serves TLS
(--tls-cert/--tls-key), varanus terminates TLS for the driver and is a TLS
client of the stub (--upstream-tls --upstream-tls-ca ca.pem), and the
driver connects with tls=true and the test CA. The comparison is the same.

Variants: plain, zlib, snappy, zstd, exhaust, w0, failed, dupkey, sasl.
Artifacts (both recordings, varanus's stderr) stay in --work-dir.
Must run under /usr/bin/python3: PyMongo 3.11 is Debian's python3-pymongo.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import agree  # noqa: E402
import harness  # noqa: E402  (tests/integration/harness.py: start a server, read its address)
import tls_certs  # noqa: E402  (tests/integration/tls_certs.py: make_certs.sh into a temp dir)

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

def stub_tls_args() -> list[str]:
    return ["--tls-cert", tls_certs.cert("server.pem"), "--tls-key", tls_certs.cert("server.key")]


def varanus_tls_args() -> list[str]:
    """Both legs: the server certificate for the driver, the test CA for the stub."""
    return stub_tls_args() + ["--upstream-tls", "--upstream-tls-ca", tls_certs.cert("ca.pem")]


def start_stub(stub_bin: str, tls: bool = False) -> "harness.Server":
    return harness.start_stub(stub_bin, *(stub_tls_args() if tls else []))


def start_varanus(varanus_bin: str, upstream: str, notes: list[str],
                  tls: bool = False) -> "harness.Server":
    """varanus on port 0 in front of `upstream`; its events are its stdout
    lines, kept by the harness (Server.stdout_lines())."""
    base = [varanus_bin, "--listen", "127.0.0.1:0", "--upstream", upstream]
    if tls:
        base += varanus_tls_args()

    def start(argv):
        server = harness.Server(argv, name="varanus", address_from="stderr",
                                address_regex=r"listening on (\S+?),")
        try:
            return server.start(), ""
        except harness.HarnessError:
            # stdout's EOF may wake start() before stderr is read: wait for
            # the exit and both readers, then read what varanus said.
            if server.proc is not None:
                server.proc.wait(5)
            for t in server._threads:
                t.join(2.0)
            return None, server.stderr()

    server, err = start(base + ["--max-document-length", "0"])
    if server is None:
        raise Failure(f"varanus did not start: {err[-2000:]}")
    return server


def wait_until(predicate, what: str, timeout: float = DEADLINE_S, poll: float = 0.02):
    """Polls `predicate` until it holds; raises Failure naming `what` at the deadline."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > end:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def parse_lines(lines: list[str], strict: bool) -> list[dict]:
    """varanus's event lines as dicts. strict: every line must be a JSON
    object (varanus's promise); otherwise lines not (yet) complete are skipped."""
    events = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if strict:
                raise Failure(f"varanus stdout line {n} is not JSON ({exc}): {line[:300]}") from None
            continue
        if isinstance(obj, dict):
            events.append(obj)
        elif strict:
            raise Failure(f"varanus stdout line {n} is not a JSON object: {line[:300]}")
    return events


def connections_balanced(server) -> bool:
    ev = parse_lines(server.stdout_lines(), strict=False)
    opened = sum(1 for e in ev if e.get("event") == "connectionOpened")
    closed = sum(1 for e in ev if e.get("event") == "connectionClosed")
    return opened > 0 and opened == closed


# --------------------------------------------------------------------------
# PyMongo (in process)
# --------------------------------------------------------------------------

def driver_uri(address: str, tls: bool) -> str:
    """The URI for Node and libmongoc: tls=true and the test CA when --tls."""
    if not tls:
        return f"mongodb://{address}/"
    ca = urllib.parse.quote(tls_certs.cert("ca.pem"), safe="")
    return f"mongodb://{address}/?tls=true&tlsCAFile={ca}"


def run_pymongo(variant: str, address: str, out_path: str, tls: bool = False) -> list[dict]:
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
    if tls:
        kw.update(tls=True, tlsCAFile=tls_certs.cert("ca.pem"))
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


def run_node(variant: str, address: str, out_path: str, node_dir: str,
             tls: bool = False) -> list[dict]:
    modules = os.path.join(node_dir, "node_modules")
    if not os.path.isdir(os.path.join(modules, "mongodb")):
        raise Failure(f"{modules}/mongodb missing: run scripts/setup-node.sh")
    env = dict(os.environ, NODE_PATH=modules)
    return run_child(["node", os.path.join(HERE, "node_workload.js"), driver_uri(address, tls),
                      variant, out_path], out_path, env)


def run_mongoc(variant: str, address: str, out_path: str, apm_bin: str,
               tls: bool = False) -> list[dict]:
    events = run_child([apm_bin, driver_uri(address, tls), variant, out_path], out_path)
    # libmongoc 1.23 takes one requestId for the APM events (++request_id in
    # _mongoc_cluster_run_command_monitored) and the next for the message
    # (++request_id again in mongoc_cluster_run_opmsg): every command it
    # publishes names the id just before the one on the wire.
    for e in events:
        if e.get("event") in ("commandStarted", "commandSucceeded", "commandFailed"):
            e["wireRequestId"] = e["requestId"] + 1
    return events


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
        if driver in ("node", "mongoc"):
            # Neither Node 6 nor libmongoc 1.23 has exhaust cursors over OP_MSG;
            # their exhaust stream is the streaming SDAM monitor (awaited
            # hellos the driver does not publish).
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
        # insert_one, update_one, delete_one with w:0 (PyMongo 3.11 sends an
        # ordered insert_many with w:0 as an acknowledged write, without
        # writeConcern, to stop at the first error).
        w0 = names(lambda d, v: agree._is_w0(d.command))
        if len(w0) < 3:
            errs.append(f"{len(w0)} w:0 writes compared, expected >= 3")
        unacked = names(lambda d, v: bool(v.started.get("unacknowledged")))
        # Node 6.9 sends w:0 writes as ordinary requests (never moreToCome).
        if driver != "node" and len(unacked) < 3:
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
    ap.add_argument("--tls", action="store_true",
                    help="TLS on both legs (driver -> varanus -> stub), test certificates")
    a = ap.parse_args(argv)
    label = f"{a.driver}/{a.variant}" + ("/tls" if a.tls else "")
    os.makedirs(a.work_dir, exist_ok=True)
    driver_path = os.path.join(a.work_dir, "driver-events.jsonl")
    varanus_path = os.path.join(a.work_dir, "varanus-events.jsonl")
    notes: list[str] = []
    stub = varanus = None
    try:
        stub = start_stub(a.stub, a.tls)
        varanus = start_varanus(a.varanus, stub.address, notes, a.tls)
        try:
            if a.driver == "pymongo":
                driver_events = run_pymongo(a.variant, varanus.address, driver_path, a.tls)
            elif a.driver == "node":
                driver_events = run_node(a.variant, varanus.address, driver_path, a.node_dir,
                                         a.tls)
            else:
                if not a.mongoc_apm:
                    raise Failure("--mongoc-apm is required for the libmongoc driver")
                driver_events = run_mongoc(a.variant, varanus.address, driver_path,
                                           a.mongoc_apm, a.tls)
        except (Failure, harness.HarnessError):
            raise
        except Exception as exc:  # the driver raised: the workload did not run through
            raise Failure(f"the {a.driver} workload raised {type(exc).__name__}: {exc}") from exc
        # The driver has closed its connections: varanus reports each closed
        # (an event, not a sleep) before it is asked to stop.
        try:
            wait_until(lambda: connections_balanced(varanus),
                       "varanus to report every connection it opened as closed", timeout=10)
        except Failure as exc:
            notes.append(f"{exc} (continuing: SIGTERM must still flush and close)")
        varanus.stop()  # SIGTERM; HarnessError unless it exits 0
        varanus_events = parse_lines(varanus.stdout_lines(), strict=True)
    except (Failure, harness.HarnessError) as exc:
        print(f"{label}: FAILED before comparing: {exc}")
        if varanus is not None:
            print(f"--- varanus stderr ---\n{varanus.stderr()[-3000:]}")
        if stub is not None:
            print(f"--- stub stderr ---\n{stub.stderr()[-3000:]}")
        return 1
    finally:
        for p in (varanus, stub):
            if p is not None and p.alive():
                try:
                    p.stop()
                except harness.HarnessError as exc:
                    print(f"(stopping {p.name}) {exc}")
        if varanus is not None and varanus.proc is not None:
            with open(varanus_path, "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in varanus.stdout_lines())
            with open(os.path.join(a.work_dir, "varanus.stderr"), "w", encoding="utf-8") as f:
                f.write(varanus.stderr())

    r = agree.compare(driver_events, varanus_events, label, expect_heartbeat=True)
    r.notes[:0] = notes
    for e in variant_checks(a.driver, a.variant, r):
        r.errors.append(f"variant {a.variant}: {e}")
    print(r.report())
    print(f"(recordings: {driver_path}, {varanus_path})")
    return 0 if r.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
