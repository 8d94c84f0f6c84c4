#!/usr/bin/env python3
"""varanus in front of several mongos (issue 21), with PyMongo 3.11.

Two `varanus-stub --mongos` processes are two mongos (separate stores).
varanus gets mongodb://A,B/?heartbeatFrequencyMS=500, opens one listener per
mongos (its member lines) and rewrites nothing; PyMongo is given both
listeners, mongodb://L1,L2/, as an application is given its mongos list.

Checked here, through the real executables:
- PyMongo's topology is Sharded with both servers Mongos at varanus's
  listeners (its own TopologyListener says so), and no connection of this
  process goes straight to a stub; inserts go through both mongos (each
  stub's own store has some) and varanus's command events show each one
  with that mongos as `server`.
- Hello replies cross unchanged: a raw OP_MSG hello through a listener and
  straight to its mongos are the same bytes but for connectionId and
  localTime (same length, fields, order, `msg: "isdbgrid"`, no hosts/me);
  varanus_hello_rewrites_total stays 0.
- varanus's own topology events: topologyOpening, then a
  topologyDescriptionChanged with newDescription.type "Sharded" naming
  both mongos as "Mongos"; every server-level event's `via` is the
  listener of its `address`.
- One mongos stopped (killed, later restarted on the same port):
  serverDescriptionChanged to "Unknown" with an error, serverHeartbeatFailed
  with a failure, PyMongo goes on writing through the other (every insert
  acknowledged, all of them landing on the live mongos); restarted, it is
  "Mongos" again and takes writes through its listener.

    test_mongos.py VARANUS_BIN STUB_BIN [unittest args]
"""
import os
import re
import socket
import sys
import threading
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, wait_for  # noqa: E402
from test_replset import Events, connections_to, op_msg, read_frame  # noqa: E402

import bson  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from bson.son import SON  # noqa: E402
from pymongo import MongoClient, monitoring  # noqa: E402

VARANUS = STUB = ""
HEARTBEAT_MS = 500
SERVER_EVENTS = ("serverOpening", "serverClosed", "serverDescriptionChanged",
                 "serverHeartbeatStarted", "serverHeartbeatSucceeded", "serverHeartbeatFailed")
ORDERED = CodecOptions(document_class=SON)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def raw_hello(address):
    """One OP_MSG {hello: 1} on a fresh socket: the reply frame, as bytes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(op_msg(1, {"hello": 1, "$db": "admin"}))
        return read_frame(s)


class TopologyOracle(monitoring.TopologyListener):
    """PyMongo's own view of the topology, from its TopologyListener."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latest = None

    def opened(self, event):
        pass

    def closed(self, event):
        pass

    def description_changed(self, event):
        with self.lock:
            self.latest = event.new_description

    def view(self):
        """(topology type name, {"host:port": server type name})."""
        with self.lock:
            d = self.latest
        if d is None:
            return None, {}
        return d.topology_type_name, {"%s:%d" % a: s.server_type_name
                                      for a, s in d.server_descriptions().items()}


def start_mongos(listen="127.0.0.1:0"):
    return Server([STUB, "--listen", listen, "--mongos"], name="varanus-stub --mongos").start()


class MongosTest(unittest.TestCase):
    def setUp(self):
        self.clients = []
        self.proxy = None
        self.stubs = [start_mongos(), start_mongos()]
        self.mongos = [s.address for s in self.stubs]
        uri = f"mongodb://{','.join(self.mongos)}/?heartbeatFrequencyMS={HEARTBEAT_MS}"
        self.proxy = Server([VARANUS, "--listen", "127.0.0.1:0", "--upstream", uri,
                             "--admin", "127.0.0.1:0", "--connect-timeout", "1",
                             "--grace-period", "1"],
                            address_from="stderr", address_regex=r"listening on ([^\s,]+)").start()
        self.events = Events(self.proxy)
        # Both member lines (the first listener is the one "listening on").
        wait_for(lambda: len(self.member_lines()) == 2, "two member lines", 10)
        self.via = self.member_lines()
        self.listeners = [self.via[m] for m in self.mongos]
        self.assertEqual(self.listeners[0], self.proxy.address, self.proxy.stderr())
        self.admin = wait_for(lambda: re.search(r"admin endpoint on http://(\S+)",
                                                self.proxy.stderr()), "the admin line", 10).group(1)

    def tearDown(self):
        for c in self.clients:
            c.close()
        if self.proxy:
            self.proxy.stop()
        for s in self.stubs:
            s.stop()

    # -- helpers --------------------------------------------------------------
    def member_lines(self):
        """mongos address -> listener address, from varanus's member lines."""
        return dict(re.findall(r"varanus: member (\S+) via (\S+)", self.proxy.stderr()))

    def client(self, uri, **kw):
        c = MongoClient(uri, serverSelectionTimeoutMS=10000, **kw)
        self.clients.append(c)
        return c

    def sharded_client(self, **kw):
        """PyMongo given both listeners, as an application given its mongos."""
        # localThresholdMS: both mongos eligible even on a loaded machine.
        return self.client(f"mongodb://{','.join(self.listeners)}/", localThresholdMS=1000, **kw)

    def count_on(self, i):
        """Documents in t.c in mongos i's own store (straight to the stub)."""
        c = self.client(self.mongos[i], directConnection=True)
        return c.t.c.count_documents({})

    def inserts_via(self, mongos):
        return [e for e in self.events.named("commandSucceeded")
                if e.get("commandName") == "insert" and e.get("server") == mongos]

    def metric(self, name):
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=5) as r:
            m = re.search(rf"^{name} (\S+)$", r.read().decode(), re.M)
        return float(m.group(1)) if m else None

    def topology(self):
        """newDescription of varanus's latest topologyDescriptionChanged."""
        changes = self.events.named("topologyDescriptionChanged")
        return changes[-1]["newDescription"] if changes else None

    def server_types(self):
        t = self.topology() or {}
        return {s["address"]: s["type"] for s in t.get("servers", [])}

    def wait_sharded(self, what, timeout=15):
        wait_for(lambda: (self.topology() or {}).get("type") == "Sharded" and self.server_types()
                 == {m: "Mongos" for m in self.mongos}, what, timeout)

    def restart(self, i):
        """Mongos i again, on its port (a new process: new processId)."""
        self.stubs[i] = start_mongos(self.mongos[i])
        self.assertEqual(self.stubs[i].address, self.mongos[i])

    # -- tests ------------------------------------------------------------------
    def test_pymongo_sees_sharded_at_the_listeners_and_writes_through_both(self):
        oracle = TopologyOracle()
        c = self.sharded_client(event_listeners=[oracle])
        c.admin.command("ping")
        wait_for(lambda: oracle.view() == ("Sharded", {l: "Mongos" for l in self.listeners}),
                 "PyMongo's topology: Sharded, both listeners Mongos", 15)
        self.assertEqual({"%s:%d" % n for n in c.nodes}, set(self.listeners))
        # Inserts until both mongos have taken some (each stub its own store).
        sent = 0
        while sent < 200 and not (self.inserts_via(self.mongos[0])
                                  and self.inserts_via(self.mongos[1])):
            c.t.c.insert_one({"i": sent})
            sent += 1
        # Not one connection of this process goes straight to a mongos.
        self.assertEqual(connections_to({port_of(m) for m in self.mongos}), [])
        self.assertTrue(connections_to({port_of(l) for l in self.listeners}))
        counts = [self.count_on(0), self.count_on(1)]
        self.assertGreater(counts[0], 0, counts)
        self.assertGreater(counts[1], 0, counts)
        self.assertEqual(sum(counts), sent)
        # varanus's command events show each insert, with its mongos.
        wait_for(lambda: [len(self.inserts_via(m)) for m in self.mongos] == counts,
                 f"insert events per mongos equal to each store's {counts}", 10)

    def test_hello_crosses_unchanged_and_nothing_is_rewritten(self):
        for mongos, listener in zip(self.mongos, self.listeners):
            through = raw_hello(listener)
            direct = raw_hello(mongos)
            self.assertEqual(len(through), len(direct))
            self.assertEqual(through[12:21], direct[12:21])  # opcode, flags, section kind
            t = bson.decode(through[21:], ORDERED)
            d = bson.decode(direct[21:], ORDERED)
            self.assertEqual(t["msg"], "isdbgrid", t)
            self.assertEqual(d["msg"], "isdbgrid", d)
            for absent in ("hosts", "me", "setName", "primary"):
                self.assertNotIn(absent, t)
            self.assertEqual(t["topologyVersion"], d["topologyVersion"])
            # The same bytes but for what differs between two connections.
            for doc in (t, d):
                doc["connectionId"] = 0
                doc["localTime"] = 0
            self.assertEqual(bson.encode(t), bson.encode(d))
        self.assertEqual(self.metric("varanus_hello_rewrites_total"), 0.0)
        # A driver's handshakes and heartbeats through both: still nothing rewritten.
        oracle = TopologyOracle()
        c = self.sharded_client(event_listeners=[oracle], heartbeatFrequencyMS=HEARTBEAT_MS)
        c.admin.command("ping")
        wait_for(lambda: oracle.view()[0] == "Sharded", "PyMongo's topology Sharded", 15)
        self.assertEqual(self.metric("varanus_hello_rewrites_total"), 0.0)

    def test_varanus_topology_events_say_sharded_via_the_listeners(self):
        self.wait_sharded("varanus's topologyDescriptionChanged: Sharded, both Mongos")
        events = self.events.all()
        names = [e.get("event") for e in events]
        self.assertIn("topologyOpening", names)
        first_sharded = next(i for i, e in enumerate(events)
                             if e.get("event") == "topologyDescriptionChanged"
                             and e["newDescription"].get("type") == "Sharded")
        self.assertLess(names.index("topologyOpening"), first_sharded)
        for m in self.mongos:
            opening = [e for e in events if e.get("event") == "serverOpening"
                       and e.get("address") == m]
            self.assertEqual(len(opening), 1, opening)
            changed = [e for e in events if e.get("event") == "serverDescriptionChanged"
                       and e.get("address") == m
                       and e["newDescription"].get("type") == "Mongos"]
            self.assertTrue(changed, f"no serverDescriptionChanged to Mongos for {m}")
            ok = [e for e in events if e.get("event") == "serverHeartbeatSucceeded"
                  and e.get("address") == m]
            self.assertTrue(ok, f"no serverHeartbeatSucceeded for {m}")
            self.assertEqual(ok[0]["reply"].get("msg"), "isdbgrid", ok[0])
        # Every server-level event names its mongos and that mongos's listener.
        server_events = [e for e in events if e.get("event") in SERVER_EVENTS]
        self.assertTrue(server_events)
        for e in server_events:
            self.assertIn(e.get("address"), self.mongos, e)
            self.assertEqual(e.get("via"), self.via[e["address"]], e)

    def test_a_mongos_stopped_goes_unknown_and_writes_go_on_through_the_other(self):
        oracle = TopologyOracle()
        c = self.sharded_client(event_listeners=[oracle], heartbeatFrequencyMS=HEARTBEAT_MS)
        c.t.c.insert_one({"before": 1})
        self.wait_sharded("both mongos known to varanus")
        wait_for(lambda: oracle.view()[0] == "Sharded", "PyMongo's topology Sharded", 15)
        live, gone = self.mongos
        mark = len(self.events.all())
        before_live = self.count_on(0)
        self.stubs[1].stop()  # SIGTERM: exit 0, its port refuses connections
        wait_for(lambda: self.server_types().get(gone) == "Unknown",
                 f"varanus to describe {gone} as Unknown", 15)
        after = self.events.all()[mark:]
        to_unknown = [e for e in after if e.get("event") == "serverDescriptionChanged"
                      and e.get("address") == gone
                      and e["newDescription"].get("type") == "Unknown"]
        self.assertTrue(to_unknown, [e.get("event") for e in after])
        self.assertEqual(to_unknown[0]["previousDescription"].get("type"), "Mongos")
        self.assertTrue(to_unknown[0]["newDescription"].get("error"), to_unknown[0])
        self.assertEqual(to_unknown[0].get("via"), self.via[gone])
        failed = [e for e in after if e.get("event") == "serverHeartbeatFailed"
                  and e.get("address") == gone]
        self.assertTrue(failed)
        self.assertTrue(failed[0].get("failure"), failed[0])
        self.assertEqual(failed[0].get("via"), self.via[gone])
        # The live mongos stays Mongos; the topology stays Sharded.
        self.assertEqual(self.server_types().get(live), "Mongos")
        self.assertEqual(self.topology().get("type"), "Sharded")
        # PyMongo goes on writing, through the other mongos only.
        for i in range(20):
            c.t.c.insert_one({"during": i})
        self.assertEqual(self.count_on(0) - before_live, 20)
        def during(mongos):
            return [e for e in self.events.named("commandStarted")
                    if e.get("commandName") == "insert" and e.get("server") == mongos
                    and "during" in e["command"]["documents"][0]]
        wait_for(lambda: len(during(live)) == 20,
                 "20 inserts during the outage in varanus's events, via the live mongos", 10)
        self.assertEqual(during(gone), [])
        # Restarted on its port: Mongos again, and it takes writes through its listener.
        self.restart(1)
        wait_for(lambda: self.server_types().get(gone) == "Mongos",
                 f"varanus to describe {gone} as Mongos again", 15)
        back = [e for e in self.events.all()[mark:] if e.get("event") == "serverDescriptionChanged"
                and e.get("address") == gone and e["previousDescription"].get("type") == "Unknown"
                and e["newDescription"].get("type") == "Mongos"]
        self.assertTrue(back)
        direct = self.client(self.via[gone], directConnection=True)
        direct.t.c.insert_one({"after": 1})
        self.assertEqual(self.count_on(1), 1)
        wait_for(lambda: oracle.view()[1].get(self.via[gone]) == "Mongos",
                 "PyMongo to see the listener's mongos again", 15)


def main():
    global VARANUS, STUB
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    VARANUS, STUB = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:])


if __name__ == "__main__":
    main()
