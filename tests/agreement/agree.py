"""Agreement between a driver's own command monitoring and varanus's events.

The acceptance test of issue 4: a real driver runs a workload through
varanus while its own command monitoring (PyMongo CommandListener, Node
`monitorCommands`, libmongoc APM) records what it sent. This module
compares the two recordings and says, event by event, where they differ.

Driver events are dicts (one JSON object per line when they come from
another process), written by the per-driver recorders in this folder:

    event                commandStarted | commandSucceeded | commandFailed
    requestId            the request's requestID as the driver published it
    commandName, databaseName
    command              started: the command (relaxed Extended JSON)
    reply / failure      succeeded / failed (failure: code, codeName, errmsg,
                         errorLabels, or message for a client-side error)
    durationMicros       succeeded/failed: the driver's own duration
    durationResolutionMicros  how coarse the driver's clock is (Node: whole
                         milliseconds, so up to 1000 µs of real time are lost)
    connection           the driver's name for the connection (pairs started
                         with its terminal event)
    serverConnectionId   when the driver publishes it (Node, libmongoc)
    wireRequestId        optional: the id on the wire when the driver
                         publishes another (libmongoc 1.23 publishes wire - 1)
    synthetic            true for the events a driver makes up for the
                         further batches of an exhaust stream (no request
                         was sent; PyMongo 3.11 gives them requestId 0)

varanus events are its JSON lines as the README's "Event lines" table says.

What is checked (each check can fail; the self-test shows every kind):
  * every driver event has a varanus counterpart: same requestId (synthetic
    exhaust events: in order among varanus's exhaust events), commandName,
    databaseName, outcome;
  * every top-level key/value of the driver's started `command` is in
    varanus's `command` and equal as a JSON value (after normalising both
    sides' relaxed Extended JSON);
  * varanus's durationMicros <= the driver's duration (plus the driver's
    clock resolution) for requests the driver sent itself;
  * redacted commands: varanus shows `{}` and, for a server error, only
    code/codeName/errorLabels;
  * failure codes, writeErrors codes, serverConnectionId and the
    unacknowledged flag (w:0) agree;
  * every varanus started event has exactly one terminal event;
  * what varanus shows beyond the driver is only handshake/heartbeat hellos,
    labelled, and each connection starts with a labelled handshake.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

# The command monitoring spec's sensitive commands (matched case-insensitively).
SENSITIVE_COMMANDS = {
    "authenticate", "saslstart", "saslcontinue", "getnonce", "createuser",
    "updateuser", "copydbgetnonce", "copydbsaslstart", "copydb",
}
HELLO_COMMANDS = {"hello", "ismaster"}
# Keys a driver may put in the event of a legacy (OP_QUERY) operation that
# never travel on the wire: PyMongo 3.11 publishes its exhaust find with the
# implicit session's lsid although OP_QUERY has no place for it.
LEGACY_UNSENT_KEYS = {"lsid", "$clusterTime", "$readPreference", "$db"}
# A synthetic exhaust getMore: the request was never sent, so only what the
# cursor itself determines can be compared.
SYNTHETIC_COMPARED_KEYS = {"getMore", "collection"}
REDACTED_FAILURE_KEYS = {"code", "codeName", "errorLabels"}

OUTCOME = {"commandSucceeded": "succeeded", "commandFailed": "failed"}
TERMINAL = set(OUTCOME)
STARTED = "commandStarted"


# --------------------------------------------------------------------------
# Relaxed Extended JSON normalisation and comparison
# --------------------------------------------------------------------------

def _parse_iso_date(s: str) -> int:
    """Milliseconds since the epoch of an Extended JSON $date string."""
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    d = _dt.datetime.fromisoformat(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    delta = d - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def normalize(v: Any) -> Any:
    """One canonical Python value for the spellings relaxed Extended JSON
    allows across PyMongo's json_util, Node's EJSON and libbson: numbers
    wrapped or not, $date as ISO string or millis, $binary v1 or v2, hex
    case. Type wrappers that remain are compared as they are."""
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        (k, x), = v.items()
        if k in ("$numberInt", "$numberLong") and isinstance(x, str):
            return int(x)
        if k == "$numberDouble" and isinstance(x, str):
            return float(x)  # 'NaN', 'Infinity', '-Infinity' parse too
        if k == "$date":
            if isinstance(x, str):
                return {"$date": _parse_iso_date(x)}
            if isinstance(x, dict) and "$numberLong" in x:
                return {"$date": int(x["$numberLong"])}
            if isinstance(x, (int, float)):
                return {"$date": int(x)}
        if k == "$oid" and isinstance(x, str):
            return {"$oid": x.lower()}
        if k == "$binary" and isinstance(x, dict):
            sub = str(x.get("subType", "00")).lower()
            return {"$binary": {"base64": _b64(x.get("base64", "")), "subType": sub.zfill(2)}}
        if k == "$uuid" and isinstance(x, str):  # Node may print UUIDs this way
            raw = bytes.fromhex(x.replace("-", ""))
            return {"$binary": {"base64": base64.b64encode(raw).decode(), "subType": "04"}}
    if set(v) == {"$binary", "$type"}:  # legacy v1 binary
        return {"$binary": {"base64": _b64(v["$binary"]), "subType": str(v["$type"]).lower().zfill(2)}}
    return {k: normalize(x) for k, x in v.items()}


def _b64(s: str) -> str:
    try:
        return base64.b64encode(base64.b64decode(s)).decode()
    except Exception:  # not valid base64: keep as is, the comparison shows it
        return s


def json_equal(a: Any, b: Any) -> bool:
    """Equality of normalised JSON values: objects compare without regard to
    key order, numbers numerically (relaxed JSON prints the double 1.0 as 1
    in Node), booleans only with booleans, NaN equals NaN."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def subset_differences(expected: dict, actual: dict, keys: Iterable[str] | None = None,
                       ignore_missing: Iterable[str] = ()) -> list[str]:
    """Top-level keys of `expected` that `actual` lacks or holds differently."""
    expected, actual = normalize(expected or {}), normalize(actual or {})
    out = []
    ignore_missing = set(ignore_missing)
    for k in (expected if keys is None else [k for k in keys if k in expected]):
        if k not in actual:
            if k not in ignore_missing:
                out.append(f"key {k!r} missing (driver: {_short(expected[k])})")
        elif not json_equal(expected[k], actual[k]):
            out.append(f"key {k!r}: driver {_short(expected[k])} != varanus {_short(actual[k])}")
    return out


def _short(v: Any, n: int = 300) -> str:
    s = json.dumps(v, sort_keys=False, default=str)
    return s if len(s) <= n else s[:n] + "..."


# --------------------------------------------------------------------------
# Commands: a started event with its terminal event
# --------------------------------------------------------------------------

@dataclass
class Command:
    source: str                 # "driver" or "varanus"
    seq: int                    # order of the started event in its recording
    conn: Any                   # driver connection / varanus connectionId
    request_id: int
    name: str
    db: str
    started: dict
    terminal: dict | None = None
    matched: "Command | None" = None

    @property
    def outcome(self) -> str | None:
        return OUTCOME.get(self.terminal["event"]) if self.terminal else None

    @property
    def command(self) -> dict:
        return self.started.get("command") or {}

    def flag(self, key: str) -> bool:
        return bool(self.started.get(key) or (self.terminal or {}).get(key))

    @property
    def wire_id(self) -> Any:
        """The requestID on the wire: `wireRequestId` when a driver's recorder
        knows the driver publishes another id (libmongoc 1.23: wire - 1)."""
        return self.started.get("wireRequestId", (self.terminal or {}).get("wireRequestId", self.request_id))

    @property
    def hello_label(self) -> str:
        return self.started.get("hello") or ""

    @property
    def synthetic(self) -> bool:
        return bool(self.started.get("synthetic"))

    def describe(self) -> str:
        t = self.terminal or {}
        parts = [f"{self.source} #{self.seq} conn={self.conn} requestId={self.request_id} "
                 f"{self.name} db={self.db} outcome={self.outcome}"]
        for k in ("hello", "exhaust", "awaited", "unacknowledged", "redacted", "synthetic", "compressor"):
            if self.started.get(k):
                parts.append(f"{k}={self.started[k]}")
        parts.append(f"command={_short(self.command)}")
        if "reply" in t:
            parts.append(f"reply={_short(t['reply'])}")
        if "failure" in t:
            parts.append(f"failure={_short(t['failure'])}")
        if "durationMicros" in t:
            parts.append(f"durationMicros={t['durationMicros']}")
        return " ".join(parts)


def pair_events(events: list[dict], source: str, conn_key: str,
                orphans_are_synthetic: bool = False) -> tuple[list[Command], list[str]]:
    """Started events with their terminal event, by (connection, requestId),
    first in first out (exhaust chains and PyMongo's requestId 0 reuse an id
    one after the other). With orphans_are_synthetic (driver recordings), a
    terminal event with nothing open is a synthetic exhaust batch of its own.
    Returns the commands and every pairing problem:
    a terminal event with no started event open, a started event left
    without one, a terminal event whose command name differs."""
    commands: list[Command] = []
    open_: dict[tuple, list[Command]] = defaultdict(list)
    problems: list[str] = []
    for i, e in enumerate(events):
        kind = e.get("event")
        if kind != STARTED and kind not in TERMINAL:
            continue
        key = (e.get(conn_key), e.get("requestId"))
        if kind == STARTED:
            c = Command(source, len(commands), key[0], e.get("requestId"), e.get("commandName", ""),
                        e.get("databaseName", ""), e)
            commands.append(c)
            open_[key].append(c)
        else:
            if not open_[key]:
                if orphans_are_synthetic:
                    # libmongoc publishes the further batches of an exhaust
                    # cursor as terminal events alone (no request was sent).
                    c = Command(source, len(commands), key[0], e.get("requestId"),
                                e.get("commandName", ""), e.get("databaseName", ""),
                                {"event": None, "synthetic": True, "terminalOnly": True}, e)
                    commands.append(c)
                    continue
                problems.append(f"{source}: {kind} (line {i + 1}) with no open started event: {_short(e)}")
                continue
            c = open_[key].pop(0)
            c.terminal = e
            if e.get("commandName", c.name) != c.name:
                problems.append(f"{source}: {kind} names {e.get('commandName')!r} but its started "
                                f"event names {c.name!r}: {c.describe()}")
    for key, rest in open_.items():
        for c in rest:
            problems.append(f"{source}: started event without a terminal event: {c.describe()}")
    return commands, problems


# --------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------

@dataclass
class Result:
    label: str
    driver_events: int = 0
    matched_events: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pairs: list[tuple[Command, Command]] = field(default_factory=list)
    driver_commands: list[Command] = field(default_factory=list)
    varanus_commands: list[Command] = field(default_factory=list)
    extras: Counter = field(default_factory=Counter)
    min_duration_slack: float | None = None

    @property
    def missing(self) -> int:
        return self.driver_events - self.matched_events

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        hellos = sum(self.extras.values())
        detail = ", ".join(f"{n} {k}" for k, n in sorted(self.extras.items()))
        line = (f"{self.label}: {self.driver_events} driver events, {self.matched_events} matched, "
                f"{self.missing} missing; varanus extra: {hellos} hellos")
        if detail:
            line += f" ({detail})"
        if self.min_duration_slack is not None:
            line += f"; min duration slack {self.min_duration_slack:.0f} us"
        if self.errors:
            line += f"; {len(self.errors)} MISMATCHES"
        return line

    def report(self) -> str:
        out = [self.summary()]
        for n in self.notes:
            out.append(f"  note: {n}")
        for e in self.errors:
            out.append(f"  MISMATCH: {e}")
        return "\n".join(out)

    def error(self, msg: str, *cmds: Command | None) -> None:
        lines = [msg] + [f"      {c.describe()}" for c in cmds if c is not None]
        self.errors.append("\n".join(lines))


def _failure_code(failure: Any) -> Any:
    return failure.get("code") if isinstance(failure, dict) else None


def _write_error_codes(reply: Any) -> list | None:
    if not isinstance(reply, dict) or not isinstance(reply.get("writeErrors"), list):
        return None
    return [normalize(w).get("code") if isinstance(w, dict) else None for w in reply["writeErrors"]]


def _is_w0(cmd: dict) -> bool:
    wc = normalize(cmd).get("writeConcern")
    return isinstance(wc, dict) and json_equal(wc.get("w"), 0)


def _is_sensitive(name: str, cmd: dict) -> bool:
    n = name.lower()
    return n in SENSITIVE_COMMANDS or (n in HELLO_COMMANDS and "speculativeAuthenticate" in (cmd or {}))


def compare(driver_events: list[dict], varanus_events: list[dict], label: str,
            expect_heartbeat: bool = False) -> Result:
    """Compare one run's recordings; the Result lists every mismatch."""
    r = Result(label)
    dcmds, dprob = pair_events(driver_events, "driver", "connection", orphans_are_synthetic=True)
    vcmds, vprob = pair_events(varanus_events, "varanus", "connectionId")
    r.driver_commands, r.varanus_commands = dcmds, vcmds
    for p in dprob:
        r.notes.append("driver recording: " + p)
    for p in vprob:
        r.errors.append(p)
    r.driver_events = sum(1 for e in driver_events if e.get("event") == STARTED or e.get("event") in TERMINAL)
    if not dcmds:
        r.errors.append("the driver published no command events: nothing was compared")

    by_id: dict[Any, list[Command]] = defaultdict(list)
    for v in vcmds:
        by_id[v.request_id].append(v)

    # Pass 1: requests the driver sent itself, by requestId.
    for d in (c for c in dcmds if not c.synthetic):
        cands = [v for v in by_id.get(d.wire_id, []) if v.matched is None]
        same = [v for v in cands if v.name == d.name]
        sid = d.started.get("serverConnectionId")
        if sid is not None and len(same) > 1:
            same.sort(key=lambda v: not json_equal(v.started.get("serverConnectionId"), sid))
        if same:
            _match(r, d, same[0])
        elif cands:
            r.error(f"commandName differs for requestId {d.wire_id}", d, cands[0])
        else:
            r.error(f"varanus has no event for requestId {d.wire_id} ({d.name})", d)

    # Pass 2: the driver's synthetic exhaust events, in order among varanus's
    # exhaust events the driver did not send.
    for d in (c for c in dcmds if c.synthetic):
        cands = [v for v in vcmds if v.matched is None and v.flag("exhaust") and v.name == d.name
                 and not v.hello_label]
        if cands:
            _match(r, d, cands[0])
        else:
            r.error(f"no varanus exhaust event left for the driver's synthetic {d.name}", d)

    # What varanus shows beyond the driver: only labelled hellos.
    first_on_conn: dict[Any, Command] = {}
    for v in vcmds:
        first_on_conn.setdefault(v.conn, v)
        if v.hello_label and v.name.lower() not in HELLO_COMMANDS:
            r.error(f"varanus labels a {v.name} as hello={v.hello_label!r}", v)
        if v.matched is None:
            if v.hello_label:
                key = v.hello_label + (" awaited" if v.flag("awaited") else "")
                r.extras[key] += 1
            else:
                r.error("varanus reported a command the driver did not publish, not labelled as a hello", v)
    for conn, v in first_on_conn.items():
        if v.hello_label != "handshake":
            r.error(f"connection {conn}: first command is not a labelled handshake hello", v)
    if vcmds and not any(v.hello_label == "handshake" for v in vcmds):
        r.error("varanus labelled no handshake hello")
    if expect_heartbeat and not any(v.hello_label == "heartbeat" for v in vcmds):
        r.error("varanus labelled no heartbeat hello although the driver ran heartbeats through it")
    return r


def _match(r: Result, d: Command, v: Command) -> None:
    d.matched, v.matched = v, d
    r.pairs.append((d, v))
    terminal_only = bool(d.started.get("terminalOnly"))
    started_ok = True
    if d.db and v.db != d.db:
        r.error(f"databaseName differs: driver {d.db!r}, varanus {v.db!r}", d, v)
        started_ok = False
    if v.hello_label:
        r.error(f"the driver published this command but varanus labels it hello={v.hello_label!r}", d, v)
        started_ok = False

    # The started event's command.
    if _is_sensitive(d.name, d.command):
        if v.command != {} or not v.started.get("redacted"):
            r.error("sensitive command not redacted by varanus (command must be {} and redacted true)", d, v)
            started_ok = False
    elif not terminal_only:
        if d.synthetic:
            diffs = subset_differences(d.command, v.command, keys=SYNTHETIC_COMPARED_KEYS)
        elif "$db" not in v.command:
            # Upconverted from a legacy opcode: keys the driver adds to its
            # event but could not send are noted, not held against varanus.
            diffs = subset_differences(d.command, v.command, ignore_missing=LEGACY_UNSENT_KEYS)
            unsent = sorted(k for k in LEGACY_UNSENT_KEYS if k in d.command and k not in v.command)
            if unsent:
                r.notes.append(f"{d.name} requestId {d.request_id} (legacy opcode): driver event has "
                               f"{unsent}, not on the wire")
        else:
            diffs = subset_differences(d.command, v.command)
        if diffs:
            r.error("command differs: " + "; ".join(diffs), d, v)
            started_ok = False
    if v.started.get("commandTruncated") or (v.terminal or {}).get("replyTruncated"):
        r.notes.append(f"varanus truncated a document of requestId {v.request_id} "
                       "(run with --max-document-length 0)")

    sid = d.started.get("serverConnectionId")
    if sid is not None and v.started.get("serverConnectionId") is not None \
            and not json_equal(normalize(sid), normalize(v.started.get("serverConnectionId"))):
        r.error(f"serverConnectionId differs: driver {sid}, varanus {v.started.get('serverConnectionId')}", d, v)
        started_ok = False

    # Unacknowledged means the request had moreToCome, which driver events do
    # not show. A w:0 write whose succeeded event carries the spec's made-up
    # reply {ok: 1} was sent that way (PyMongo, libmongoc); Node 6.9 sends
    # w:0 writes as ordinary requests and publishes the server's reply.
    if not d.synthetic and not terminal_only:
        v_unacked = bool(v.started.get("unacknowledged"))
        d_reply = normalize((d.terminal or {}).get("reply"))
        made_up_reply = isinstance(d_reply, dict) and set(d_reply) == {"ok"}
        if v_unacked and not _is_w0(d.command):
            r.error("varanus says unacknowledged, but the driver's command has no w:0 write concern", d, v)
            started_ok = False
        elif _is_w0(d.command) and made_up_reply and not v_unacked:
            r.error("unacknowledged flag: the driver sent w:0 and got no reply, "
                    "varanus unacknowledged=False", d, v)
            started_ok = False
        elif _is_w0(d.command) and not v_unacked:
            r.notes.append(f"{d.name} requestId {d.request_id}: w:0 sent as an acknowledged request "
                           "(no moreToCome); varanus reports it acknowledged")

    if started_ok and not terminal_only:
        r.matched_events += 1

    # The terminal event.
    if d.terminal is None:
        return
    if v.terminal is None:
        r.error("varanus has no terminal event for this command", d, v)
        return
    terminal_ok = True
    if d.outcome != v.outcome:
        r.error(f"outcome differs: driver {d.outcome}, varanus {v.outcome}", d, v)
        terminal_ok = False
    elif d.outcome == "failed":
        dcode = _failure_code(d.terminal.get("failure"))
        vfail = v.terminal.get("failure") or {}
        if dcode is not None and not json_equal(normalize(dcode), normalize(vfail.get("code"))):
            r.error(f"failure code differs: driver {dcode}, varanus {vfail.get('code')}", d, v)
            terminal_ok = False
        if _is_sensitive(d.name, d.command) and not set(vfail) <= REDACTED_FAILURE_KEYS:
            r.error(f"redacted failure shows {sorted(set(vfail) - REDACTED_FAILURE_KEYS)}; "
                    f"only {sorted(REDACTED_FAILURE_KEYS)} may remain", d, v)
            terminal_ok = False
    else:
        if _is_sensitive(d.name, d.command) and v.terminal.get("reply") not in ({}, None):
            r.error("redacted reply is not {}", d, v)
            terminal_ok = False
        dwe = _write_error_codes(d.terminal.get("reply"))
        if dwe is not None and dwe != _write_error_codes(v.terminal.get("reply")):
            r.error(f"writeErrors differ: driver codes {dwe}, varanus "
                    f"{_write_error_codes(v.terminal.get('reply'))}", d, v)
            terminal_ok = False

    if not d.synthetic and "reply" in d.terminal and d.terminal["reply"] is None:
        # Node publishes succeeded at once for requests it does not wait on
        # (endSessions at close): its duration does not span the round trip.
        r.notes.append(f"{d.name} requestId {d.request_id}: the driver did not wait for the reply; "
                       "durations not compared")
    elif not d.synthetic:
        dd, vd = d.terminal.get("durationMicros"), v.terminal.get("durationMicros")
        res = d.terminal.get("durationResolutionMicros", 0) or 0
        if dd is None or vd is None:
            r.error(f"duration missing: driver {dd}, varanus {vd}", d, v)
            terminal_ok = False
        else:
            slack = dd + res - vd
            r.min_duration_slack = slack if r.min_duration_slack is None else min(r.min_duration_slack, slack)
            if slack < 0:
                r.error(f"varanus durationMicros {vd} exceeds the driver's {dd} us "
                        f"(+{res} us clock resolution): the proxy hop cannot take longer than the round trip",
                        d, v)
                terminal_ok = False
    if terminal_ok:
        r.matched_events += 1


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def load_jsonl(path: str, strict: bool = True) -> list[dict]:
    """One JSON object per line. varanus promises valid JSON on every line:
    with strict, a line that does not parse is an error naming it."""
    events = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if strict:
                    raise ValueError(f"{path}:{n}: not a JSON line ({exc}): {line[:200]}") from None
                continue
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: not a JSON object: {line[:200]}")
            events.append(obj)
    return events


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("driver_events")
    ap.add_argument("varanus_events")
    ap.add_argument("--label", default="agreement")
    ap.add_argument("--expect-heartbeat", action="store_true")
    a = ap.parse_args(argv)
    r = compare(load_jsonl(a.driver_events), load_jsonl(a.varanus_events), a.label, a.expect_heartbeat)
    print(r.report())
    return 0 if r.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
