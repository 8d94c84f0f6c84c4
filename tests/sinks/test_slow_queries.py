#!/usr/bin/env python3
"""Slow queries and a live view, through the real proxy with PyMongo against
varanus-stub (issue 22):

- `lines: commands` sinks: one line per finished command; with
  `minDurationMicros` the slow finds (the stub's stubFault delay on their
  connection) and nothing else, each with its command and summary; with
  `failedOnly` the failed commands with command and failure; summary fields
  equal what the driver's own replies said (counted here);
- `collection` on every command kind PyMongo sends;
- `documents: string` + `extendedJson: canonical`: one JSON type per key over
  every line, int64 values (a stored value, the cursor id) round-trip exactly;
- `/stats/commands` against the event log of the same run;
- `varanus top` in a real terminal (tmux): header, the slow namespace first,
  `q` exits 0; `--once --json`.

    test_slow_queries.py VARANUS_BIN STUB_BIN [unittest args]
"""
import collections
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, main_with_stub, wait_for, start_stub  # noqa: E402
from test_wire import Wire  # noqa: E402  (raw wire messages, legacy opcodes included)

import bson  # noqa: E402
from bson.int64 import Int64  # noqa: E402
from pymongo import ASCENDING, MongoClient, monitoring  # noqa: E402
from pymongo.errors import OperationFailure  # noqa: E402

PROXY = STUB = STUB_ADDR = ""
DELAY_MS = 300
SLOW_MICROS = 200_000
BIG = 2 ** 62 + 12345  # above 2^53: a double cannot hold it


class Replies(monitoring.CommandListener):
    """The driver's own view: each reply and failure by request id."""

    def __init__(self):
        self.replies = {}
        self.failures = {}
        self.names = {}

    def started(self, event):
        self.names[event.request_id] = event.command_name

    def succeeded(self, event):
        self.replies[event.request_id] = event.reply

    def failed(self, event):
        self.failures[event.request_id] = event.failure


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def get_json(admin, path):
    return json.loads(urllib.request.urlopen(f"http://{admin}{path}", timeout=5).read())




def workload(uri, driver):
    """Fast work, failing commands, every collection-naming command, then
    slow finds on their own connection. Returns the slow finds' request ids."""
    client = MongoClient(uri, appname="fast", event_listeners=[driver])
    db = client.test
    people = db.people
    people.insert_many([{"_id": i, "name": f"p{i}", "age": 30 + i} for i in range(10)])
    people.insert_one({"_id": "big", "big": Int64(BIG), "ratio": 0.25})
    try:
        people.insert_many([{"_id": 1}, {"_id": 100}], ordered=False)  # a write error
    except Exception:
        pass
    list(people.find({"age": {"$gte": 30}}))
    cursor = people.find({}, batch_size=3)
    list(cursor)  # find + getMores
    people.update_many({"age": {"$gte": 35}}, {"$set": {"old": True}})
    people.update_one({"_id": "new"}, {"$set": {"age": 1}}, upsert=True)
    people.delete_one({"_id": 0})
    people.count_documents({})
    people.estimated_document_count()  # count
    people.distinct("age")
    people.find_one_and_update({"_id": 1}, {"$set": {"x": 1}})
    db.create_collection("made")
    try:
        db.command("collMod", "made")  # the stub has no collMod: a failure that names "made"
    except OperationFailure:
        pass
    db.made.create_index([("a", ASCENDING)])
    list(db.made.list_indexes())
    db.made.drop_index("a_1")
    db.made.drop()
    for bad in ({"noSuchCommandHere": 1},):
        try:
            db.command(bad)
        except OperationFailure:
            pass
    try:
        list(people.find({"age": {"$foo": 1}}))
    except OperationFailure:
        pass
    db.slowcoll.insert_many([{"_id": i} for i in range(4)])

    slow = MongoClient(uri, appname="slow", maxPoolSize=1, event_listeners=[driver])
    slow.admin.command({"stubFault": 1, "delayMs": DELAY_MS, "thisConnection": True})
    before = set(driver.names)
    for i in range(3):
        list(slow.test.slowcoll.find({"_id": {"$gte": i}}))
    slowIds = {r for r in set(driver.names) - before if driver.names[r] == "find"}
    slow.admin.command({"stubFault": 1, "thisConnection": True})  # off (itself delayed)
    slow.close()
    client.close()
    return slowIds


def legacy_workload(address):
    """4.x-era opcodes on a raw connection: OP_QUERY on a collection (a find),
    OP_GET_MORE, an OP_QUERY command on <db>.$cmd, OP_INSERT (no reply).
    Returns {requestID: what the replies said}."""
    w = Wire(address)
    seen = {}
    rid = w.send_query("test.people", {"age": {"$gte": 30}}, n_return=2)
    _, to, _, cursor, _, docs = w.recv_reply()
    assert to == rid and cursor != 0
    seen[rid] = ("find", len(docs), cursor)
    rid = w.send_get_more("test.people", 3, cursor)
    _, to, _, after, _, docs = w.recv_reply()
    seen[rid] = ("getMore", len(docs), after)
    rid = w.send_query("test.$cmd", {"count": "people"}, n_return=-1)
    _, to, _, _, _, docs = w.recv_reply()
    seen[rid] = ("count", None, None)
    w.next_id += 1
    body = struct.pack("<i", 0) + b"test.legacyins\x00" + bson.encode({"_id": 1})
    w.sock.sendall(struct.pack("<iiii", 16 + len(body), w.next_id, 0, 2002) + body)
    seen[w.next_id] = ("insert", None, None)
    rid = w.send_msg({"ping": 1, "$db": "admin"})  # the insert was read before this reply
    w.recv()
    seen[rid] = ("ping", None, None)
    w.close()
    return seen


class SlowQueries(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="varanus-slow-")
        p = lambda name: os.path.join(cls.tmp, name)  # noqa: E731
        cls.path = staticmethod(p)
        cmd = {"lines": "commands"}
        sinks = {"admin": {"listen": "127.0.0.1:0"}, "outputs": [
            {"type": "file", "path": p("events.log")},
            dict(cmd, type="file", path=p("commands.log")),
            dict(cmd, type="file", path=p("slow.log"),
                 filter={"minDurationMicros": SLOW_MICROS, "keepHellos": False}),
            dict(cmd, type="file", path=p("failed.log"),
                 filter={"failedOnly": True, "keepHellos": False}),
            dict(cmd, type="file", path=p("typed.log"), documents="string",
                 extendedJson="canonical", maxDocumentLength=0),
        ]}
        with open(p("config.json"), "w") as f:
            json.dump({"sinks": sinks}, f)
        cls.proxy = Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                            "--config", p("config.json")],
                           name="proxy", address_from="stderr",
                           address_regex=r"listening on ([^\s,]+)").start()
        m = wait_for(lambda: re.search(
            r"admin endpoint on (?:http://)?(\S+)", cls.proxy.stderr()), "the admin line", timeout=20)
        cls.admin = m.group(1)
        cls.driver = Replies()
        cls.slowIds = workload(cls.proxy.uri(directConnection="true"), cls.driver)
        cls.legacy = legacy_workload(cls.proxy.address)

        def settled():
            # Every command line the driver's requests produced is in the log.
            try:
                lines = read_lines(p("commands.log"))
            except (OSError, ValueError):
                return None
            ids = {l["requestId"] for l in lines if l["event"] == "command"}
            done = set(cls.driver.replies) | set(cls.driver.failures) | set(cls.legacy)
            return lines if done <= ids else None

        cls.commands = wait_for(settled, "the command lines", timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def ours(self, lines):
        """Lines of commands the driver published (no hellos, no connection events)."""
        return [l for l in lines if l["event"] == "command" and "hello" not in l]

    def test_one_line_per_command_with_command_and_summary(self):
        lines = self.ours(self.commands)
        by_id = {l["requestId"]: l for l in lines}
        self.assertEqual(len(by_id), len(lines))  # one line per command
        for rid, name in self.driver.names.items():
            self.assertIn(rid, by_id, name)
            l = by_id[rid]
            self.assertEqual(l["commandName"], name)
            self.assertIsInstance(l["command"], dict)
            self.assertEqual(next(iter(l["command"])), name)
            self.assertGreater(l["requestBytes"], 0)
            self.assertGreater(l["replyBytes"], 0)
            if rid in self.driver.failures:
                self.assertEqual(l["outcome"], "failed")
                continue
            self.assertEqual(l["outcome"], "succeeded")
            reply = self.driver.replies[rid]
            cursor = reply.get("cursor")
            if cursor is not None:
                batch = cursor.get("firstBatch", cursor.get("nextBatch"))
                self.assertEqual(l["nReturned"], len(batch), l)
                self.assertEqual(l["cursorId"], int(cursor["id"]))
                self.assertEqual(l["cursorExhausted"], int(cursor["id"]) == 0)
            else:
                self.assertNotIn("nReturned", l)
            if name in ("insert", "update", "delete"):
                self.assertEqual(l["n"], reply.get("n", 0), l)
                self.assertEqual(l["writeErrors"], len(reply.get("writeErrors", [])))
            if name == "update":
                self.assertEqual(l["nModified"], reply.get("nModified", 0))
                self.assertEqual(l["nUpserted"], len(reply.get("upserted", [])))
            if name == "delete":
                self.assertEqual(l["nRemoved"], reply["n"])
        # The workload's write error and upsert show up.
        self.assertTrue(any(l.get("writeErrors", 0) == 1 for l in lines))
        self.assertTrue(any(l.get("nUpserted", 0) == 1 for l in lines))
        # The started/terminal pairs are still there in the events sink.
        events = read_lines(self.path("events.log"))
        self.assertFalse(any(l["event"] == "command" for l in events))
        self.assertTrue(any(l["event"] == "commandStarted" for l in events))

    def test_slow_sink_holds_exactly_the_slow_commands(self):
        slow = self.ours(read_lines(self.path("slow.log")))
        expected = {l["requestId"] for l in self.ours(self.commands)
                    if l["durationMicros"] >= SLOW_MICROS}
        self.assertEqual({l["requestId"] for l in slow}, expected)
        finds = [l for l in slow if l.get("collection") == "slowcoll"]
        self.assertEqual(len(self.slowIds), 3)
        self.assertEqual({l["requestId"] for l in finds}, self.slowIds)
        # Besides, a stubFault: the stub delays its own reply too. (Other
        # commands only if the machine stalled them: the set above decides.)
        self.assertIn("stubFault", {l["commandName"] for l in slow})
        for l in finds:
            self.assertGreaterEqual(l["durationMicros"], DELAY_MS * 1000)
            self.assertEqual(l["collection"], "slowcoll")
            self.assertEqual(l["databaseName"], "test")
            self.assertEqual(l["appName"], "slow")
            self.assertEqual(l["command"]["find"], "slowcoll")
            self.assertIn("$gte", l["command"]["filter"]["_id"])
            batch = self.driver.replies[l["requestId"]]["cursor"]["firstBatch"]
            self.assertEqual(l["nReturned"], len(batch))
            self.assertEqual(l["reply"]["cursor"]["firstBatch"], batch)

    def test_failed_sink_holds_the_failed_commands(self):
        failed = self.ours(read_lines(self.path("failed.log")))
        self.assertEqual({l["requestId"] for l in failed}, set(self.driver.failures))
        self.assertEqual(len(failed), 3)
        for l in failed:
            self.assertEqual(l["outcome"], "failed")
            self.assertIn("command", l)
            want = self.driver.failures[l["requestId"]]
            self.assertEqual(l["failure"]["code"], want["code"])
            self.assertEqual(l["failure"]["errmsg"], want["errmsg"])
        names = {l["commandName"]: l for l in failed}
        self.assertEqual(set(names), {"noSuchCommandHere", "collMod", "find"})
        self.assertEqual(names["noSuchCommandHere"]["failure"]["codeName"], "CommandNotFound")
        self.assertEqual(names["collMod"]["collection"], "made")
        self.assertEqual(names["find"]["command"]["filter"], {"age": {"$foo": 1}})
        self.assertEqual(names["find"]["collection"], "people")

    def test_collection_on_every_command_kind(self):
        expected = {
            "insert": {"people", "slowcoll", "legacyins"}, "find": {"people", "slowcoll"},
            "getMore": {"people"}, "update": {"people"}, "delete": {"people"},
            "aggregate": {"people"}, "count": {"people"}, "distinct": {"people"},
            "findAndModify": {"people"}, "create": {"made"}, "collMod": {"made"},
            "createIndexes": {"made"}, "listIndexes": {"made"}, "dropIndexes": {"made"},
            "drop": {"made"},
        }
        seen = collections.defaultdict(set)
        for l in self.ours(self.commands):
            seen[l["commandName"]].add(l.get("collection"))
        for name, colls in expected.items():
            self.assertEqual(seen[name], colls, name)
        self.assertEqual(seen["ping"] | seen["endSessions"], {None} if seen["ping"] or
                         seen["endSessions"] else set())
        # The started/terminal events carry it too.
        events = read_lines(self.path("events.log"))
        for l in events:
            if l["event"] in ("commandStarted", "commandSucceeded") and \
                    l["commandName"] in expected:
                self.assertIn(l["collection"], expected[l["commandName"]], l)

    def test_collection_and_summary_of_legacy_opcodes(self):
        lines = {l["requestId"]: l for l in self.ours(self.commands)
                 if l["connectionId"] and l["requestId"] in self.legacy}
        self.assertEqual(set(lines), set(self.legacy))
        for rid, (name, n, cursor) in self.legacy.items():
            l = lines[rid]
            self.assertEqual(l["commandName"], name)
            if name == "ping":
                self.assertNotIn("collection", l)
                continue
            self.assertEqual(l["collection"], "legacyins" if name == "insert" else "people")
            if n is not None:
                self.assertEqual(l["nReturned"], n)
                self.assertEqual(l["cursorId"], cursor)
        self.assertTrue(any(l.get("unacknowledged") for l in lines.values()))

    def test_string_documents_canonical_json_one_type_per_key(self):
        typed = read_lines(self.path("typed.log"))
        self.assertGreater(len(typed), 40)
        types = collections.defaultdict(set)
        for l in typed:
            for k, v in l.items():
                types[k].add(type(v).__name__)
        conflicts = {k: t for k, t in types.items() if len(t) > 1}
        self.assertEqual(conflicts, {})
        self.assertEqual(types["command"], {"str"})
        self.assertEqual(types["reply"], {"str"})
        self.assertEqual(types["cursorId"], {"dict"})
        # An int64 above 2^53 round-trips exactly, in the command and the reply.
        inserts = [json.loads(l["command"]) for l in typed
                   if l.get("commandName") == "insert" and "big" in l["command"]]
        self.assertEqual(len(inserts), 1)
        self.assertEqual(inserts[0]["documents"][0]["big"], {"$numberLong": str(BIG)})
        self.assertEqual(inserts[0]["documents"][0]["ratio"], {"$numberDouble": "0.25"})
        # Cursor ids: the line's, the getMore's command and the driver's agree exactly.
        opened = [l for l in typed if l.get("commandName") == "find" and
                  l.get("cursorExhausted") is False]
        self.assertTrue(opened)
        ids = set()
        opened = [l for l in opened if l["requestId"] not in self.legacy]
        for l in opened:
            want = int(self.driver.replies[l["requestId"]]["cursor"]["id"])
            self.assertEqual(int(l["cursorId"]["$numberLong"]), want)
            reply = json.loads(l["reply"])
            self.assertEqual(int(reply["cursor"]["id"]["$numberLong"]), want)
            ids.add(want)
        getmores = [l for l in typed if l.get("commandName") == "getMore" and "hello" not in l
                    and l["requestId"] not in self.legacy]
        self.assertTrue(getmores)
        for l in getmores:
            self.assertIn(int(json.loads(l["command"])["getMore"]["$numberLong"]), ids)

    def test_stats_commands_against_the_event_log(self):
        def complete():
            # The log and the stats are fed by the same sink thread: read
            # both until they agree on the number of commands.
            lines = self.ours(read_lines(self.path("commands.log")))
            s = get_json(self.admin, "/stats/commands")
            total = sum(r["count"] for r in s["commands"])
            return (s, lines) if total == len(lines) else None

        stats, lines = wait_for(complete, "/stats/commands to count every command", timeout=20)
        want = collections.defaultdict(list)
        for l in lines:
            want[(l["databaseName"], l.get("collection", ""), l["commandName"])].append(l)
        self.assertEqual(stats["folded"], 0)
        rows = {(r["database"], r["collection"], r["commandName"]): r for r in stats["commands"]}
        self.assertEqual(set(rows), set(want))
        for key, ls in want.items():
            r = rows[key]
            durations = sorted(l["durationMicros"] for l in ls)
            self.assertEqual(r["count"], len(ls), key)
            self.assertEqual(r["failed"], sum(l["outcome"] == "failed" for l in ls), key)
            self.assertEqual(r["totalMicros"], sum(durations), key)
            self.assertEqual(r["maxMicros"], durations[-1], key)
            self.assertEqual(r["bytesIn"], sum(l["requestBytes"] for l in ls), key)
            # (Unacknowledged writes have no reply: no replyBytes.)
            self.assertEqual(r["bytesOut"], sum(l.get("replyBytes", 0) for l in ls), key)
            # Percentiles: the bucket's upper bound (4 an octave: within 25 %), never past max.
            p50 = durations[(len(durations) - 1) // 2]
            self.assertGreaterEqual(r["p50Micros"], p50, key)
            self.assertLessEqual(r["p50Micros"], min(p50 * 1.25 + 1, durations[-1]), key)
            self.assertLessEqual(r["p99Micros"], durations[-1])
            self.assertGreaterEqual(r["p99Micros"], r["p95Micros"])
            self.assertGreaterEqual(r["last60s"]["count"], r["last10s"]["count"])
        # Sorted by total time: the slow finds first.
        self.assertEqual((stats["commands"][0]["collection"], stats["commands"][0]["commandName"]),
                         ("slowcoll", "find"))
        self.assertEqual(rows[("test", "slowcoll", "find")]["last60s"]["count"], 3)

    def test_top_once_json(self):
        out = subprocess.run([PROXY, "top", "--admin", self.admin, "--once", "--json"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        snap = json.loads(out.stdout)
        self.assertEqual(snap["commands"][0]["collection"], "slowcoll")
        for k in ("database", "collection", "commandName", "count", "failed", "totalMicros",
                  "p50Micros", "p99Micros"):
            self.assertIn(k, snap["commands"][0])
        self.assertIn("opsPerSecond", snap)
        self.assertIn("connections", snap)
        self.assertEqual(snap["eventsDropped"], 0)

    @unittest.skipIf(shutil.which("tmux") is None, "tmux not installed (scripts/install-deps.sh)")
    def test_top_in_a_real_terminal(self):
        session = f"varanus-top-{os.getpid()}"
        status = self.path("top.status")
        sock = self.path("tmux.sock")
        tmux = ["tmux", "-S", sock]
        cmd = f"{PROXY} top --admin {self.admin}; echo $? > {status}; sleep 60"
        subprocess.run(tmux + ["new-session", "-d", "-s", session, "-x", "160", "-y", "40", cmd],
                       check=True)
        try:
            def pane():
                return subprocess.run(tmux + ["capture-pane", "-p", "-t", session],
                                      capture_output=True, text=True).stdout

            screen = wait_for(lambda: (
                lambda s: s if "NAMESPACE" in s and "test.slowcoll" in s else None)(pane()),
                "the top screen", timeout=20)
            rows = screen.splitlines()
            self.assertTrue(rows[0].startswith("varanus top"), screen)
            self.assertIn(self.admin, rows[0])
            self.assertIn("sorted by total time", rows[0])
            self.assertRegex(screen, r"ops/s [0-9.]+ +connections \d+ +events dropped 0")
            header = next(i for i, r in enumerate(rows) if r.startswith("NAMESPACE"))
            first = rows[header + 1].split()
            self.assertEqual(first[:2], ["test.slowcoll", "find"], screen)
            self.assertEqual(first[2], "3")
            # Sorting by count puts another namespace first; the header says so.
            subprocess.run(tmux + ["send-keys", "-t", session, "c"], check=True)
            wait_for(lambda: "sorted by count" in pane(), "the count sort", timeout=20)
            subprocess.run(tmux + ["send-keys", "-t", session, "q"], check=True)
            def exited():
                if not os.path.exists(status):
                    return False
                with open(status) as f:
                    return f.read().strip() != ""

            wait_for(exited, "top to exit", timeout=20)
            with open(status) as f:
                self.assertEqual(f.read().strip(), "0")
        finally:
            subprocess.run(tmux + ["kill-server"], capture_output=True)




if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
