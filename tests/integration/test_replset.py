#!/usr/bin/env python3
"""varanus in front of a replica set (issue 21), with real drivers.

The stub runs a 3-member set (rs0). varanus gets the connection string
mongodb://SEED/?replicaSet=rs0 and opens a listener per member; drivers
connect to its first listener with replicaSet=rs0 and no directConnection.

Checked here, through the real executables:
- PyMongo and the Node driver discover the set through the rewritten hello
  replies, and every address in their topology is a varanus listener: zero
  connections from the driver to a stub member.
- A step-down on the primary: the driver finds the new primary through
  varanus and writes again; varanus emits serverDescriptionChanged for both
  members, then one topologyDescriptionChanged naming the new primary.
- A member added to the set: a listener for it (its member line),
  serverOpening and a topologyDescriptionChanged naming it.
- A member stopped: Unknown with the error, serverHeartbeatFailed events;
  back to RSSecondary when it returns.
- PyMongo's own ServerListener / TopologyListener / ServerHeartbeatListener
  (the oracle) see the same type transitions as varanus's events, mapped
  through the member lines.
- The rewriting at the byte level: a hello straight to a secondary's
  listener names only listeners; varanus_hello_rewrites_total counts it.

    test_replset.py VARANUS_BIN STUB_BIN [unittest args]
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, free_port, wait_for  # noqa: E402

import bson  # noqa: E402
from pymongo import MongoClient, monitoring  # noqa: E402

VARANUS = STUB = ""
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
HEARTBEAT_MS = 500


# -- helpers -----------------------------------------------------------------
def op_msg(request_id, doc, flags=0):
    body = bson.BSON.encode(doc)
    payload = struct.pack("<I", flags) + b"\x00" + body
    return struct.pack("<iiii", 16 + len(payload), request_id, 0, 2013) + payload


def read_frame(sock):
    head = b""
    while len(head) < 16:
        chunk = sock.recv(16 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    length = struct.unpack("<i", head[:4])[0]
    rest = b""
    while len(rest) < length - 16:
        chunk = sock.recv(length - 16 - len(rest))
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return head + rest


def command(address, doc, timeout=5.0):
    """One OP_MSG command on a fresh socket; the reply's body."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(op_msg(1, doc))
        frame = read_frame(s)
    return bson.BSON(frame[21:]).decode()


def connections_to(ports):
    """This process's established TCP connections whose remote port is in
    `ports` (from /proc/net/tcp, matched to our own socket inodes)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", link)
        if m:
            mine.add(m.group(1))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            remote_port = int(f[2].split(":")[1], 16)
            state, inode = f[3], f[9]
            if state == "01" and inode in mine and remote_port in ports:
                found.append(remote_port)
    return found


class Events:
    """varanus's event lines (stdout), parsed."""

    def __init__(self, proxy):
        self.proxy = proxy

    def all(self):
        out = []
        for line in self.proxy.stdout_lines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def named(self, *names):
        return [e for e in self.all() if e.get("event") in names]


class Oracle(monitoring.ServerListener, monitoring.TopologyListener,
             monitoring.ServerHeartbeatListener):
    """PyMongo's own SDAM events."""

    def __init__(self):
        self.lock = threading.Lock()
        self.server_changes = []  # (address, old type, new type)
        self.heartbeat_failures = []
        self.topology_changes = 0

    def opened(self, event):
        pass

    def closed(self, event):
        pass

    def description_changed(self, event):
        with self.lock:
            if isinstance(event, monitoring.ServerDescriptionChangedEvent):
                addr = "%s:%d" % event.server_address
                self.server_changes.append((addr, event.previous_description.server_type_name,
                                            event.new_description.server_type_name))
            else:
                self.topology_changes += 1

    def started(self, event):
        pass

    def succeeded(self, event):
        pass

    def failed(self, event):
        with self.lock:
            self.heartbeat_failures.append("%s:%d" % event.connection_id)


# PyMongo names types "RSPrimary", "RSSecondary", "Unknown", ... as the spec.
class ReplSetTest(unittest.TestCase):
    def setUp(self):
        self.stub = Server([STUB, "--listen", "127.0.0.1:0", "--replset", "rs0", "--members", "3"],
                           name="varanus-stub", lines=3).start()
        self.members = list(self.stub.addresses)
        self.admin_port = free_port()
        uri = f"mongodb://{self.members[0]}/?replicaSet=rs0&heartbeatFrequencyMS={HEARTBEAT_MS}"
        self.proxy = Server([VARANUS, "--listen", "127.0.0.1:0", "--upstream", uri,
                             "--admin", f"127.0.0.1:{self.admin_port}",
                             "--connect-timeout", "1", "--grace-period", "1"],
                            address_from="stderr", address_regex=r"listening on ([^\s,]+)").start()
        self.events = Events(self.proxy)
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.proxy.stop()
        self.stub.stop()

    # -- what varanus said ----------------------------------------------------
    def member_lines(self):
        """member address -> listener address, from the member lines."""
        return dict(re.findall(r"varanus: member (\S+) via (\S+)", self.proxy.stderr()))

    def via(self, member):
        wait_for(lambda: member in self.member_lines(), f"a listener for {member}", 10)
        return self.member_lines()[member]

    def member_of(self, listener):
        for member, via in self.member_lines().items():
            if via == listener:
                return member
        return None

    def client(self, **kw):
        c = MongoClient(self.proxy.address, replicaSet="rs0", heartbeatFrequencyMS=HEARTBEAT_MS,
                        serverSelectionTimeoutMS=10000, **kw)
        self.clients.append(c)
        return c

    def topology(self):
        """The topology varanus described last (its latest topologyDescriptionChanged)."""
        changes = self.events.named("topologyDescriptionChanged")
        return changes[-1]["newDescription"] if changes else None

    def server_type(self, member):
        t = self.topology()
        if not t:
            return None
        for s in t.get("servers", []):
            if s["address"] == member:
                return s["type"]
        return None

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def wait_primary(self, member, timeout=15):
        wait_for(lambda: self.topology() and self.topology().get("type") == "ReplicaSetWithPrimary"
                 and self.server_type(member) == "RSPrimary", f"varanus sees {member} as primary",
                 timeout)

    # -- tests ------------------------------------------------------------------
    def test_pymongo_discovers_the_set_through_varanus_only(self):
        c = self.client()
        c.t.c.insert_one({"x": 0})
        wait_for(lambda: len(c.nodes) == 3, "PyMongo to know three members", 15)
        listeners = set(self.member_lines().values())
        self.assertEqual(len(listeners), 3, self.proxy.stderr())
        nodes = {"%s:%d" % n for n in c.nodes}
        self.assertEqual(nodes, listeners)
        self.assertTrue(nodes.isdisjoint(self.members), nodes)
        for i in range(5):
            c.t.c.insert_one({"i": i})
        self.assertEqual(c.t.c.count_documents({}), 6)
        # Not one connection of this process goes straight to a member.
        stub_ports = {int(m.rsplit(":", 1)[1]) for m in self.members}
        self.assertEqual(connections_to(stub_ports), [])
        self.assertTrue(connections_to({int(v.rsplit(":", 1)[1]) for v in listeners}))
        # varanus saw the inserts.
        wait_for(lambda: len([e for e in self.events.named("commandSucceeded")
                              if e.get("commandName") == "insert"]) == 6, "six inserts", 10)

    def test_hello_rewritten_at_the_byte_level_and_counted(self):
        self.via(self.members[2])
        wait_for(lambda: len(self.member_lines()) == 3, "three member lines", 10)
        lines = self.member_lines()
        reply = command(lines[self.members[1]], {"hello": 1, "$db": "admin"})
        self.assertEqual(sorted(reply["hosts"]), sorted(lines.values()))
        self.assertEqual(reply["me"], lines[self.members[1]])
        self.assertEqual(reply["primary"], lines[self.members[0]])
        self.assertEqual(reply["setName"], "rs0")
        # Straight from the stub, for comparison: its own addresses.
        direct = command(self.members[1], {"hello": 1, "$db": "admin"})
        self.assertEqual(sorted(direct["hosts"]), sorted(self.members))
        # An ordinary command's reply that names members is left alone.
        status = command(lines[self.members[1]], {"serverStatus": 1, "$db": "admin"})
        self.assertIn("host", status)
        m = re.search(r"^varanus_hello_rewrites_total (\d+)$", self.metrics(), re.M)
        self.assertTrue(m and int(m.group(1)) >= 1, self.metrics()[:2000])
        # The events keep what the server said: the members' own addresses.
        def hello_events():
            return [e for e in self.events.named("commandSucceeded")
                    if e.get("commandName") == "hello" and "hosts" in e.get("reply", {})]
        wait_for(lambda: hello_events(), "the hello's succeeded event", 10)
        self.assertEqual(sorted(hello_events()[0]["reply"]["hosts"]), sorted(self.members))

    def test_step_down_seen_by_driver_and_by_varanus_in_order(self):
        oracle = Oracle()
        c = self.client(event_listeners=[oracle])
        c.t.c.insert_one({"before": 1})
        self.wait_primary(self.members[0])
        wait_for(lambda: len(c.nodes) == 3, "PyMongo to know three members", 15)
        mark = len(self.events.all())
        # The primary steps down (sent through varanus, as an operator would).
        try:
            c.admin.command("replSetStepDown", 10)
        except Exception:
            pass  # mongod closes connections on a step-down; either is fine
        new_primary = self.members[1]
        self.wait_primary(new_primary)
        # The driver finds the new primary through varanus and writes again.
        wait_for(lambda: c.primary is not None and "%s:%d" % c.primary == self.via(new_primary),
                 "PyMongo to follow the new primary", 15)
        c.t.c.insert_one({"after": 1})
        after = self.events.all()[mark:]
        sdam = [e for e in after if e.get("event") in
                ("serverDescriptionChanged", "topologyDescriptionChanged")]
        kinds = []
        for e in sdam:
            if e["event"] == "serverDescriptionChanged":
                kinds.append((e["address"], e["previousDescription"]["type"],
                              e["newDescription"]["type"]))
            else:
                kinds.append(("topology", e["newDescription"]["type"]))
        old, new = self.members[0], self.members[1]
        # The new primary is RSPrimary; the old one leaves RSPrimary: the
        # spec marks a primary Unknown when another reports a newer
        # election, and its next check finds it RSSecondary.
        i_new = kinds.index((new, "RSSecondary", "RSPrimary"))
        left = [i for i, k in enumerate(kinds) if k[0] == old and k[1] == "RSPrimary"]
        self.assertEqual(len(left), 1, kinds)
        self.assertIn(kinds[left[0]][2], ("Unknown", "RSSecondary"), kinds)

        def primary_of(description):
            for s in description.get("servers", []):
                if s["type"] == "RSPrimary":
                    return s["address"]
            return None

        # Exactly one topologyDescriptionChanged names the new primary (its
        # previous description did not), after both servers' changes. The
        # old primary's change may come first (then the set is briefly
        # ReplicaSetNoPrimary) or with the new primary's (the spec marks
        # the old one Unknown when the new one reports a newer election).
        naming = [i for i, e in enumerate(sdam) if e["event"] == "topologyDescriptionChanged"
                  and primary_of(e["newDescription"]) == new
                  and primary_of(e["previousDescription"]) != new]
        self.assertEqual(len(naming), 1, kinds)
        self.assertGreater(naming[0], max(i_new, left[0]), kinds)
        # The old primary comes back as a secondary.
        wait_for(lambda: self.server_type(old) == "RSSecondary", "the old primary as secondary", 15)
        # Each varanus event names the member and its listener.
        self.assertEqual(sdam[i_new].get("via"), self.via(new))
        # The oracle: PyMongo saw the same transitions, at the listeners.
        # Per member, the types each side went through (Unknown left out:
        # PyMongo 3.11 marks a server Unknown after a failed command without
        # publishing that change; repeats collapsed) must be the same.
        # PyMongo publishes its SDAM events from a queue, about once a second.
        def path(changes):
            out = {}
            for member, _, new_type in changes:
                seq = out.setdefault(member, [])
                if new_type != "Unknown" and (not seq or seq[-1] != new_type):
                    seq.append(new_type)
            return out

        def pymongo_paths():
            with oracle.lock:
                return path([(self.member_of(a), o, n) for a, o, n in oracle.server_changes])

        def varanus_paths():
            return path([(e["address"], None, e["newDescription"]["type"])
                         for e in self.events.named("serverDescriptionChanged")])

        try:
            wait_for(lambda: pymongo_paths() == varanus_paths()
                     and varanus_paths().get(old) == ["RSPrimary", "RSSecondary"]
                     and varanus_paths().get(new) == ["RSSecondary", "RSPrimary"],
                     "PyMongo's ServerListener and varanus to agree", 15)
        except AssertionError as e:
            raise AssertionError(f"{e}; PyMongo {pymongo_paths()}; varanus {varanus_paths()}") from None
        m = re.search(r"^varanus_topology_primary_changes_total (\d+)$", self.metrics(), re.M)
        self.assertTrue(m and int(m.group(1)) == 1, self.metrics()[:3000])

    def test_member_added_gets_a_listener_and_events(self):
        c = self.client()
        c.t.c.insert_one({"x": 1})
        self.wait_primary(self.members[0])
        added = command(self.members[0], {"stubAddMember": 1, "$db": "admin"})
        self.assertEqual(added.get("ok"), 1.0, added)
        new = added["host"]
        listener = self.via(new)
        wait_for(lambda: self.server_type(new) == "RSSecondary", "varanus to see the new member",
                 15)
        opening = [e for e in self.events.named("serverOpening") if e["address"] == new]
        self.assertEqual(len(opening), 1)
        self.assertEqual(opening[0].get("via"), listener)
        wait_for(lambda: len(c.nodes) == 4, "PyMongo to know four members", 15)
        self.assertIn(listener, {"%s:%d" % n for n in c.nodes})
        self.assertNotIn(new, {"%s:%d" % n for n in c.nodes})

    def test_member_stopped_goes_unknown_and_comes_back(self):
        oracle = Oracle()
        c = self.client(event_listeners=[oracle])
        c.t.c.insert_one({"x": 1})
        secondary = self.members[2]
        wait_for(lambda: self.server_type(secondary) == "RSSecondary", "a known secondary", 15)
        mark = len(self.events.all())
        r = command(self.members[0], {"stubStopMember": secondary, "$db": "admin"})
        self.assertEqual(r.get("ok"), 1.0, r)
        wait_for(lambda: self.server_type(secondary) == "Unknown", "varanus to mark it Unknown", 15)
        after = self.events.all()[mark:]
        to_unknown = [e for e in after if e.get("event") == "serverDescriptionChanged"
                      and e["address"] == secondary and e["newDescription"]["type"] == "Unknown"]
        self.assertTrue(to_unknown)
        self.assertTrue(to_unknown[0]["newDescription"].get("error"), to_unknown[0])
        failed = [e for e in after if e.get("event") == "serverHeartbeatFailed"
                  and e["address"] == secondary]
        self.assertTrue(failed)
        self.assertTrue(failed[0].get("failure"))
        # Writes go on meanwhile.
        c.t.c.insert_one({"during": 1})
        r = command(self.members[0], {"stubStartMember": secondary, "$db": "admin"})
        self.assertEqual(r.get("ok"), 1.0, r)
        wait_for(lambda: self.server_type(secondary) == "RSSecondary", "the member back", 15)
        # PyMongo saw it go and come back at its listener.
        listener = self.via(secondary)
        wait_for(lambda: any(a == listener and n == "Unknown" for a, _, n in oracle.server_changes)
                 and any(a == listener and o == "Unknown" and n == "RSSecondary"
                         for a, o, n in oracle.server_changes),
                 "PyMongo's ServerListener to see it leave and return", 15)

    def test_member_removed_its_listener_stops_accepting(self):
        c = self.client()
        c.t.c.insert_one({"x": 1})
        gone = self.members[2]
        wait_for(lambda: self.server_type(gone) == "RSSecondary", "a known secondary", 15)
        listener = self.via(gone)
        host, port = listener.rsplit(":", 1)
        # A connection open through it before the member leaves.
        held = socket.create_connection((host, int(port)), timeout=5)
        self.addCleanup(held.close)
        r = command(self.members[0], {"stubRemoveMember": gone, "$db": "admin"})
        self.assertEqual(r.get("ok"), 1.0, r)
        wait_for(lambda: any(e["address"] == gone for e in self.events.named("serverClosed")),
                 "serverClosed for the removed member", 15)
        self.assertIsNone(self.server_type(gone))
        wait_for(lambda: "left the set" in self.proxy.stderr(), "the line saying it left", 10)

        def refused():
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
                return False
            except OSError:
                return True
        wait_for(refused, "its listener to stop accepting", 10)
        # The open connection goes on.
        held.sendall(op_msg(7, {"ping": 1, "$db": "admin"}))
        self.assertEqual(bson.BSON(read_frame(held)[21:]).decode().get("ok"), 1.0)
        c.t.c.insert_one({"y": 1})

    def test_node_driver_discovers_and_fails_over_through_varanus(self):
        wait_for(lambda: len(self.member_lines()) >= 1, "member lines", 10)
        self.wait_primary(self.members[0])
        listeners = sorted(self.via(m) for m in self.members)
        uri = f"mongodb://{self.proxy.address}/?replicaSet=rs0&heartbeatFrequencyMS={HEARTBEAT_MS}"
        node = os.environ.get("VARANUS_NODE") or "node"
        r = subprocess.run([node, os.path.join(NODE_DIR, "replset.js"), uri, ",".join(listeners),
                            self.via(self.members[1])],
                           capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.wait_primary(self.members[1])


def main():
    global VARANUS, STUB
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    VARANUS, STUB = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:])


if __name__ == "__main__":
    main()
