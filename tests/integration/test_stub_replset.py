#!/usr/bin/env python3
"""varanus-stub's replica-set faults (issue 21), with PyMongo 3.11 as the oracle.

Members that stop (as a killed mongod) and come back, hang, join the set and
leave it: {stubStopMember}, {stubStartMember}, {stubHangMember},
{stubAddMember}, {stubRemoveMember}. A PyMongo client with replicaSet=rs0
and heartbeatFrequencyMS=500 is pointed straight at the stub; its own
ServerListener, TopologyListener and ServerHeartbeatListener say what it
saw (server types, servers closed, failed heartbeats). Raw hellos
over directConnection check the fields mongod sends (setVersion, hosts,
primary, electionId, topologyVersion, the REMOVED member's reply).

Every test starts its own stub (port 0) through harness.py and stops it with
SIGTERM, asserting exit code 0. Waits have deadlines; nothing sleeps.

Run: VARANUS_STUB=build/src/stub/varanus-stub /usr/bin/python3 test_stub_replset.py -v
"""

import os
import random
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bson import ObjectId  # noqa: E402
from pymongo import MongoClient, monitoring  # noqa: E402
from pymongo.errors import AutoReconnect, NetworkTimeout, OperationFailure  # noqa: E402

from harness import HarnessError, Server, free_port, start_stub, stub_binary  # noqa: E402

TIMEOUT = 20.0  # seconds to wait for anything the driver should notice


def addr(address):
    return "%s:%d" % address


class Oracle:
    """What PyMongo's own SDAM listeners reported, in order."""

    def __init__(self):
        self.cond = threading.Condition()
        self.topology = {}  # address -> server type name, from the latest topology description
        self.changes = []  # (address, previous type, new type) from the ServerListener
        self.closed = []  # ... and closed
        self.hb_failed = []  # (address, failure) from the ServerHeartbeatListener
        self.hb_succeeded = []  # addresses
        oracle = self

        class Servers(monitoring.ServerListener):
            def opened(self, event):
                pass  # PyMongo 3.11: seeds only

            def description_changed(self, event):
                oracle._add(
                    oracle.changes,
                    (
                        addr(event.server_address),
                        event.previous_description.server_type_name,
                        event.new_description.server_type_name,
                    ),
                )

            def closed(self, event):
                oracle._add(oracle.closed, addr(event.server_address))

        class Topology(monitoring.TopologyListener):
            def opened(self, event):
                pass

            def description_changed(self, event):
                servers = event.new_description.server_descriptions()
                with oracle.cond:
                    oracle.topology = {addr(a): sd.server_type_name for a, sd in servers.items()}
                    oracle.cond.notify_all()

            def closed(self, event):
                pass

        class Heartbeats(monitoring.ServerHeartbeatListener):
            def started(self, event):
                pass

            def succeeded(self, event):
                oracle._add(oracle.hb_succeeded, addr(event.connection_id))

            def failed(self, event):
                oracle._add(oracle.hb_failed, (addr(event.connection_id), event.reply))

        self.listeners = [Servers(), Topology(), Heartbeats()]

    def _add(self, lst, item):
        with self.cond:
            lst.append(item)
            self.cond.notify_all()

    def wait(self, predicate, what, timeout=TIMEOUT):
        """Waits until predicate() (called under the lock) is true; fails naming `what`."""
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(
                    "timed out after %.0f s waiting for %s; topology %r, last changes %r"
                    % (timeout, what, self.topology, self.changes[-8:])
                )

    def wait_types(self, want, what):
        """Waits until the driver's topology is exactly `want` ({address: type})."""
        self.wait(lambda: self.topology == want, what)

    def mark(self):
        """Positions in each event list, to look only at what comes next."""
        with self.cond:
            return len(self.changes), len(self.hb_failed), len(self.closed)


def direct(address, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 10000)
    return MongoClient(address, directConnection=True, **kw)


def hello(address):
    c = direct(address)
    try:
        return c.admin.command("hello")
    finally:
        c.close()


def refused(address):
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def election_id(doc):
    return int(str(doc["electionId"]), 16)


class StubReplSetCase(unittest.TestCase):
    """A 3-member stub and a PyMongo replica-set client on it, with the oracle."""

    def setUp(self):
        self.stub = start_stub(None, "--replset", "rs0", "--members", "3", members=3)
        self.addCleanup(self.stub.stop)
        self.hosts = list(self.stub.addresses)
        self.oracle = Oracle()
        self.client = MongoClient(
            self.hosts[0],
            replicaSet="rs0",
            heartbeatFrequencyMS=500,
            connectTimeoutMS=1000,
            serverSelectionTimeoutMS=10000,
            event_listeners=self.oracle.listeners,
        )
        self.addCleanup(self.client.close)
        # Seeded with one member, the driver discovers all three.
        self.oracle.wait_types(
            {
                self.hosts[0]: "RSPrimary",
                self.hosts[1]: "RSSecondary",
                self.hosts[2]: "RSSecondary",
            },
            "discovery of the three members",
        )
        self.admins = {}

    def admin(self, via, *args, **kw):
        """An admin command sent straight to member `via` (a host)."""
        if via not in self.admins:
            self.admins[via] = direct(via)
            self.addCleanup(self.admins[via].close)
        return self.admins[via].admin.command(*args, **kw)


class DiscoveryTest(StubReplSetCase):
    def test_discovers_three_and_inserts(self):
        self.client.test.c.insert_one({"_id": 1})
        self.assertEqual(self.client.test.c.find_one({"_id": 1}), {"_id": 1})
        h = hello(self.hosts[1])
        self.assertEqual(h["setName"], "rs0")
        self.assertEqual(h["setVersion"], 1)
        self.assertEqual(h["hosts"], self.hosts)
        self.assertEqual(h["primary"], self.hosts[0])
        self.assertEqual(h["me"], self.hosts[1])
        self.assertTrue(h["secondary"])
        self.assertNotIn("electionId", h)
        self.assertIn("lastWrite", h)
        p = hello(self.hosts[0])
        self.assertIsInstance(p["electionId"], ObjectId)
        self.assertTrue(p["isWritablePrimary"])


class AddMemberTest(StubReplSetCase):
    def test_added_member_is_discovered_as_secondary(self):
        before = hello(self.hosts[1])
        n_changes, _, _ = self.oracle.mark()
        port = free_port()
        reply = self.admin(self.hosts[1], "stubAddMember", 1, port=port)
        new = "127.0.0.1:%d" % port
        self.assertEqual(reply["host"], new)
        want = {h: "RSSecondary" for h in self.hosts + [new]}
        want[self.hosts[0]] = "RSPrimary"
        self.oracle.wait_types(want, "the added member as a 4th server, RSSecondary")
        # (PyMongo 3.11 publishes ServerOpeningEvent for seeds only, so the
        # ServerListener's evidence is the new server's first description.)
        self.oracle.wait(
            lambda: (new, "Unknown", "RSSecondary") in self.oracle.changes[n_changes:],
            "the ServerListener to see the added member RSSecondary",
        )
        after = hello(self.hosts[1])
        self.assertEqual(after["setVersion"], before["setVersion"] + 1)
        self.assertEqual(after["hosts"], self.hosts + [new])
        self.assertGreater(after["topologyVersion"]["counter"], before["topologyVersion"]["counter"])
        joined = hello(new)
        self.assertEqual(joined["setName"], "rs0")
        self.assertEqual(joined["me"], new)
        self.assertTrue(joined["secondary"])
        self.assertEqual(joined["primary"], self.hosts[0])
        self.assertEqual(joined["setVersion"], after["setVersion"])
        # A second one on a free port (the set was started on port 0).
        second = self.admin(self.hosts[0], "stubAddMember", 1)["host"]
        self.assertNotIn(second, self.hosts + [new])
        want[second] = "RSSecondary"
        self.oracle.wait_types(want, "a 5th server on a free port")
        self.assertEqual(hello(second)["setVersion"], before["setVersion"] + 2)

    def test_streaming_hello_answers_at_once(self):
        # A parked awaitable hello (maxAwaitTimeMS 60 s) answers with the
        # new hosts as soon as a member joins.
        c = direct(self.hosts[2])
        self.addCleanup(c.close)
        tv = c.admin.command("hello")["topologyVersion"]
        result = {}

        def awaited():
            result["reply"] = c.admin.command("hello", topologyVersion=tv, maxAwaitTimeMS=60000)
            result["at"] = time.monotonic()

        t = threading.Thread(target=awaited)
        t.start()
        added_at = time.monotonic()
        new = self.admin(self.hosts[0], "stubAddMember", 1)["host"]
        t.join(TIMEOUT)
        self.assertFalse(t.is_alive(), "the awaitable hello did not answer")
        self.assertIn(new, result["reply"]["hosts"])
        self.assertLess(result["at"] - added_at, TIMEOUT)
        self.assertGreater(result["reply"]["topologyVersion"]["counter"], tv["counter"])

    def test_next_port_when_started_on_a_fixed_port(self):
        # A set started on PORT, PORT+1 gets PORT+2. Fixed ports may be taken
        # by someone else: try a few bases.
        for _ in range(10):
            base = random.randrange(20000, 60000)
            argv = [stub_binary(), "--listen", "127.0.0.1:%d" % base]
            try:
                stub = Server(argv + ["--replset", "rs1", "--members", "2"], lines=2).start()
            except HarnessError:
                continue  # PORT or PORT+1 taken
            with stub:
                self.assertEqual(stub.addresses, ["127.0.0.1:%d" % p for p in (base, base + 1)])
                c = direct(stub.addresses[1])
                try:
                    reply = c.admin.command("stubAddMember", 1)
                except OperationFailure as e:
                    self.assertEqual(e.code, 9001, e.details)  # PORT+2 taken: try elsewhere
                    continue
                finally:
                    c.close()
                self.assertEqual(reply["host"], "127.0.0.1:%d" % (base + 2))
                self.assertEqual(hello(reply["host"])["hosts"], stub.addresses + [reply["host"]])
                return
        self.fail("no 3 consecutive free ports in 10 tries")


class StopStartTest(StubReplSetCase):
    def test_stopped_secondary_goes_unknown_and_comes_back(self):
        victim = self.hosts[2]
        before = hello(victim)
        counter_other = hello(self.hosts[1])["topologyVersion"]["counter"]
        n_changes, n_failed, _ = self.oracle.mark()
        self.assertEqual(self.admin(self.hosts[0], "stubStopMember", victim)["host"], victim)
        # Killed as mongod: connects refused the moment the command returns.
        self.assertTrue(refused(victim), "the stopped member still accepts connections")
        self.oracle.wait(
            lambda: (victim, "RSSecondary", "Unknown") in self.oracle.changes[n_changes:],
            "the ServerListener to see the stopped member go Unknown",
        )
        self.oracle.wait(
            lambda: any(a == victim for a, _ in self.oracle.hb_failed[n_failed:]),
            "a failed heartbeat of the stopped member",
        )
        self.oracle.wait_types(
            {self.hosts[0]: "RSPrimary", self.hosts[1]: "RSSecondary", victim: "Unknown"},
            "the topology with the stopped member Unknown",
        )
        # The others still list it (it is still in the config), with a new counter.
        other = hello(self.hosts[1])
        self.assertIn(victim, other["hosts"])
        self.assertEqual(other["setVersion"], 1)
        self.assertGreater(other["topologyVersion"]["counter"], counter_other)
        self.client.test.c.insert_one({"_id": "during"})

        n_changes, _, _ = self.oracle.mark()
        self.assertEqual(self.admin(self.hosts[0], "stubStartMember", victim)["host"], victim)
        self.oracle.wait(
            lambda: (victim, "Unknown", "RSSecondary") in self.oracle.changes[n_changes:],
            "the ServerListener to see the restarted member RSSecondary again",
        )
        self.oracle.wait_types(
            {self.hosts[0]: "RSPrimary", self.hosts[1]: "RSSecondary", victim: "RSSecondary"},
            "the topology with the member back",
        )
        back = hello(victim)
        self.assertNotEqual(back["topologyVersion"]["processId"], before["topologyVersion"]["processId"])
        self.assertEqual(back["topologyVersion"]["counter"], 0)
        self.assertTrue(back["secondary"])
        self.assertEqual(back["me"], victim)

    def test_stopped_primary_fails_over_and_writes_go_on(self):
        old = self.hosts[0]
        self.client.test.c.insert_one({"_id": "before"})
        h1 = hello(self.hosts[1])
        eid = election_id(hello(old))
        self.admin(self.hosts[1], "stubStopMember", old)
        # At once, before the driver has noticed: the pooled connection to the
        # old primary is dead, PyMongo retries the write on the new primary.
        self.client.test.c.insert_one({"_id": "after"})
        self.oracle.wait_types(
            {old: "Unknown", self.hosts[1]: "RSPrimary", self.hosts[2]: "RSSecondary"},
            "the next member as primary",
        )
        self.assertEqual(addr(self.client.primary), self.hosts[1])
        p = hello(self.hosts[1])
        self.assertTrue(p["isWritablePrimary"])
        self.assertEqual(p["primary"], self.hosts[1])
        self.assertGreater(election_id(p), eid)
        self.assertGreater(p["topologyVersion"]["counter"], h1["topologyVersion"]["counter"])
        self.assertIn(old, p["hosts"])
        self.assertEqual(
            sorted(d["_id"] for d in self.client.test.c.find()), ["after", "before"]
        )
        # The old primary comes back as a secondary.
        self.admin(self.hosts[1], "stubStartMember", old)
        self.oracle.wait_types(
            {old: "RSSecondary", self.hosts[1]: "RSPrimary", self.hosts[2]: "RSSecondary"},
            "the old primary back as a secondary",
        )
        self.assertFalse(hello(old)["isWritablePrimary"])

    def test_parked_streaming_hello_is_closed(self):
        # An awaitable hello parked on a member that is stopped ends with the
        # connection, long before its maxAwaitTimeMS.
        victim = self.hosts[1]
        # (A short server selection: close() would wait for the dead member.)
        c = direct(victim, socketTimeoutMS=int(TIMEOUT * 1000), serverSelectionTimeoutMS=1000)
        self.addCleanup(c.close)
        tv = c.admin.command("hello")["topologyVersion"]
        result = {}

        def awaited():
            try:
                c.admin.command("hello", topologyVersion=tv, maxAwaitTimeMS=60000)
                result["error"] = None
            except AutoReconnect as e:  # connection closed (not a timeout)
                result["error"] = e

        t = threading.Thread(target=awaited)
        t.start()
        self.admin(self.hosts[0], "stubStopMember", victim)
        t.join(TIMEOUT)
        self.assertFalse(t.is_alive(), "the parked hello was not closed")
        self.assertIsInstance(result.get("error"), AutoReconnect)
        self.assertNotIsInstance(result["error"], NetworkTimeout)



class ElectionTest(unittest.TestCase):
    def test_no_primary_then_the_restarted_member_is_elected(self):
        with start_stub(None, "--replset", "rs0", "--members", "3", members=3) as stub:
            a, b, c = stub.addresses
            eid = election_id(hello(a))
            # close() sends endSessions, waiting for a server: not long for a, which dies.
            clients = {h: direct(h, serverSelectionTimeoutMS=1000 if h == a else 10000)
                       for h in stub.addresses}
            try:
                # c leaves the config but keeps running: it takes the commands.
                clients[a].admin.command("stubRemoveMember", c)
                clients[c].admin.command("stubStopMember", b)
                # Sent to itself, the connection closes unanswered (as shutdown's).
                with self.assertRaises(AutoReconnect):
                    clients[a].admin.command("stubStopMember", a)
                self.assertTrue(refused(a) and refused(b))
                # No member left to elect; b restarts and is elected.
                clients[c].admin.command("stubStartMember", b)
                h = hello(b)
                self.assertTrue(h["isWritablePrimary"])
                self.assertEqual(h["primary"], b)
                self.assertEqual(h["hosts"], [a, b])
                self.assertGreater(election_id(h), eid)
                self.assertEqual(h["topologyVersion"]["counter"], 1)  # 0 at start, + 1 elected
                clients[c].admin.command("stubStartMember", a)
                h = hello(a)
                self.assertTrue(h["secondary"])
                self.assertEqual(h["primary"], b)
                self.assertEqual(h["topologyVersion"]["counter"], 0)
                # Stepping down needs another running member of the config.
                with self.assertRaises(OperationFailure) as cm:
                    clients[c].admin.command("stubStopMember", a)
                    clients[b].admin.command("replSetStepDown", 10)
                self.assertEqual(cm.exception.code, 262)
            finally:
                for cl in clients.values():
                    cl.close()


class RemoveMemberTest(StubReplSetCase):
    def test_removed_member_is_dropped(self):
        victim = self.hosts[2]
        _, _, n_closed = self.oracle.mark()
        self.assertEqual(self.admin(self.hosts[0], "stubRemoveMember", victim)["host"], victim)
        self.oracle.wait_types(
            {self.hosts[0]: "RSPrimary", self.hosts[1]: "RSSecondary"},
            "the driver to drop the removed member",
        )
        self.oracle.wait(
            lambda: victim in self.oracle.closed[n_closed:], "the ServerListener's closed event"
        )
        p = hello(self.hosts[0])
        self.assertEqual(p["setVersion"], 2)
        self.assertEqual(p["hosts"], self.hosts[:2])
        # The removed member still runs and answers as mongod's REMOVED member.
        ghost = hello(victim)
        self.assertFalse(ghost["isWritablePrimary"])
        self.assertFalse(ghost["secondary"])
        self.assertTrue(ghost["isreplicaset"])
        self.assertEqual(ghost["info"], "Does not have a valid replica set config")
        for absent in ("setName", "hosts", "me", "primary", "setVersion", "electionId"):
            self.assertNotIn(absent, ghost)
        self.client.test.c.insert_one({"_id": "after-remove"})

    def test_primary_cannot_be_removed(self):
        with self.assertRaises(OperationFailure) as cm:
            self.admin(self.hosts[1], "stubRemoveMember", self.hosts[0])
        self.assertEqual(cm.exception.code, 103)
        self.assertIn("step it down first", str(cm.exception))
        self.admin(self.hosts[1], "stubRemoveMember", self.hosts[2])
        with self.assertRaises(OperationFailure) as cm:
            self.admin(self.hosts[1], "stubRemoveMember", self.hosts[2])
        self.assertEqual(cm.exception.code, 74)
        self.assertIn("removed already", str(cm.exception))


class HangMemberTest(StubReplSetCase):
    def test_hung_member_times_out_and_recovers(self):
        victim = self.hosts[1]
        c = direct(victim, socketTimeoutMS=500, connectTimeoutMS=500)
        self.addCleanup(c.close)
        c.admin.command("ping")  # a pooled connection, answered
        n_changes, n_failed, _ = self.oracle.mark()
        self.admin(self.hosts[0], "stubHangMember", victim, hang=True)
        started = time.monotonic()
        with self.assertRaises(NetworkTimeout):
            c.admin.command("ping")
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        # Hung, not stopped: connections are still accepted.
        self.assertFalse(refused(victim))
        self.oracle.wait(
            lambda: (victim, "RSSecondary", "Unknown") in self.oracle.changes[n_changes:],
            "the driver's monitor to time out on the hung member",
        )
        self.oracle.wait(
            lambda: any(a == victim for a, _ in self.oracle.hb_failed[n_failed:]),
            "a failed heartbeat of the hung member",
        )
        self.admin(self.hosts[0], "stubHangMember", victim, hang=False)
        self.assertEqual(c.admin.command("ping")["ok"], 1.0)
        self.oracle.wait_types(
            {self.hosts[0]: "RSPrimary", victim: "RSSecondary", self.hosts[2]: "RSSecondary"},
            "the member answering again",
        )


class ErrorsTest(StubReplSetCase):
    def assertCode(self, code, via, *args, **kw):
        with self.assertRaises(OperationFailure) as cm:
            self.admin(via, *args, **kw)
        self.assertEqual(cm.exception.code, code, cm.exception.details)
        return str(cm.exception)

    def test_errors_name_the_cause(self):
        a, b, c = self.hosts
        msg = self.assertCode(74, a, "stubStopMember", "127.0.0.1:1")
        self.assertIn("no member 127.0.0.1:1", msg)
        self.assertIn(b, msg)
        self.assertCode(14, a, "stubStopMember", 1)
        self.admin(a, "stubStopMember", c)
        self.assertIn("stopped already", self.assertCode(20, a, "stubStopMember", c))
        self.assertIn("stopped", self.assertCode(20, a, "stubHangMember", c))
        self.assertIn("running already", self.assertCode(20, a, "stubStartMember", b))
        self.assertCode(2, a, "stubAddMember", 1, port=70000)
        taken = self.assertCode(2, a, "stubAddMember", 1, port=int(b.rsplit(":", 1)[1]))
        self.assertIn("belongs to member " + b, taken)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            msg = self.assertCode(9001, a, "stubAddMember", 1, port=port)
            self.assertIn("cannot listen on 127.0.0.1:%d" % port, msg)
        # Only on admin.
        with self.assertRaises(OperationFailure) as cm:
            self.admins[a].test.command("stubStopMember", b)
        self.assertEqual(cm.exception.code, 13)
        # Nothing changed by the failed commands.
        self.assertEqual(hello(a)["hosts"], self.hosts)

    def test_at_most_50_members(self):
        with start_stub(None, "--replset", "rs0", "--members", "2", members=2) as stub:
            c = direct(stub.addresses[0])
            try:
                added = [c.admin.command("stubAddMember", 1)["host"] for _ in range(48)]
                self.assertEqual(len(set(added)), 48)
                with self.assertRaises(OperationFailure) as cm:
                    c.admin.command("stubAddMember", 1)
                self.assertEqual(cm.exception.code, 103)
                self.assertIn("contains 51 members", str(cm.exception))
                h = hello(added[-1])
                self.assertEqual(len(h["hosts"]), 50)
                self.assertEqual(h["setVersion"], 49)
            finally:
                c.close()

    def test_standalone_has_no_members_to_stop(self):
        with start_stub(None) as stub:
            c = direct(stub.address)
            try:
                for cmd in ("stubStopMember", "stubStartMember", "stubHangMember", "stubRemoveMember"):
                    with self.assertRaises(OperationFailure) as cm:
                        c.admin.command(cmd, stub.address)
                    self.assertEqual(cm.exception.code, 76, cmd)
                with self.assertRaises(OperationFailure) as cm:
                    c.admin.command("stubAddMember", 1)
                self.assertEqual(cm.exception.code, 76)
            finally:
                c.close()


if __name__ == "__main__":
    unittest.main()
