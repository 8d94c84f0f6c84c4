#!/usr/bin/env python3
"""PyMongo (Debian's python3-pymongo 3.11) against varanus-stub, directly.

Each test class starts its own stub on port 0 through harness.py and stops
it with SIGTERM at the end (asserting exit code 0). The driver's own
command monitoring (CommandListener) is checked for the commands it sent and
the replies it got; the stub's serverStatus.varanusStub counters prove which
wire paths were really taken (compression, exhaust, streaming hello).

Run: VARANUS_STUB=build/src/stub/varanus-stub python3 test_pymongo.py [-k NAME]
"""

import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pymongo  # noqa: E402
from bson import ObjectId  # noqa: E402
from pymongo import CursorType, MongoClient, monitoring  # noqa: E402
from pymongo.errors import DuplicateKeyError, OperationFailure, WriteError  # noqa: E402
from pymongo.write_concern import WriteConcern  # noqa: E402

from harness import start_stub  # noqa: E402

TIMEOUT = 10.0  # seconds to wait for any awaited event


class Commands(monitoring.CommandListener):
    """Records the driver's command-monitoring events."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def started(self, event):
        with self.lock:
            self.started_events.append(event)

    def succeeded(self, event):
        with self.lock:
            self.succeeded_events.append(event)

    def failed(self, event):
        with self.lock:
            self.failed_events.append(event)

    def reset(self):
        with self.lock:
            self.started_events, self.succeeded_events, self.failed_events = [], [], []

    def names(self, kind="started"):
        with self.lock:
            return [e.command_name for e in getattr(self, kind + "_events")]


class Heartbeats(monitoring.ServerHeartbeatListener):
    """Signals when `wanted` awaited (streaming) heartbeats have succeeded."""

    def __init__(self, wanted=2):
        self.wanted = wanted
        self.awaited = 0
        self.polled = 0
        self.done = threading.Event()

    def started(self, event):
        pass

    def succeeded(self, event):
        if event.awaited:
            self.awaited += 1
            if self.awaited >= self.wanted:
                self.done.set()
        else:
            self.polled += 1

    def failed(self, event):
        pass


def stub_counters(client):
    return client.admin.command("serverStatus")["varanusStub"]


class WorkloadMixin:
    """The shared workload; subclasses choose the compressors."""

    compressors = None

    @classmethod
    def setUpClass(cls):
        cls.stub = start_stub()
        cls.commands = Commands()
        cls.heartbeats = Heartbeats()
        kwargs = dict(
            directConnection=True,
            serverSelectionTimeoutMS=5000,
            heartbeatFrequencyMS=500,
            maxPoolSize=1,  # one connection: w=0 writes and later reads stay in order
            event_listeners=[cls.commands, cls.heartbeats],
        )
        if cls.compressors:
            kwargs["compressors"] = cls.compressors
        cls.client = MongoClient(cls.stub.address, **kwargs)
        cls.db = cls.client["varanus_it"]

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.stub.stop()

    def setUp(self):
        self.db.drop_collection("c")
        self.commands.reset()

    # -- handshake ---------------------------------------------------------
    def test_handshake_and_server_info(self):
        info = self.client.server_info()
        self.assertEqual(info["version"], "6.0.0")
        self.assertEqual(info["versionArray"][:2], [6, 0])
        hello = self.client.admin.command("isMaster")
        self.assertIs(hello["ismaster"], True)
        self.assertEqual(hello["maxWireVersion"], 17)
        self.assertEqual(hello["minWireVersion"], 0)
        self.assertEqual(hello["maxBsonObjectSize"], 16777216)
        self.assertEqual(hello["maxMessageSizeBytes"], 48000000)
        self.assertEqual(hello["maxWriteBatchSize"], 100000)
        self.assertEqual(hello["logicalSessionTimeoutMinutes"], 30)
        self.assertIsInstance(hello["topologyVersion"]["processId"], ObjectId)
        self.assertIsInstance(hello["connectionId"], int)
        self.assertEqual(hello["ok"], 1.0)
        self.assertEqual(self.client.admin.command("ping"), {"ok": 1.0})

    # -- CRUD ----------------------------------------------------------------
    def test_insert_find_getmore(self):
        c = self.db.c
        r = c.insert_one({"_id": 0, "k": "first"})
        self.assertEqual(r.inserted_id, 0)
        r = c.insert_many([{"_id": i, "k": i % 3} for i in range(1, 23)])
        self.assertEqual(r.inserted_ids, list(range(1, 23)))
        inserts = [e for e in self.commands.started_events if e.command_name == "insert"]
        self.assertEqual(len(inserts), 2)
        self.assertEqual(len(inserts[1].command["documents"]), 22)

        self.commands.reset()
        docs = list(c.find({}, batch_size=5).sort("_id", pymongo.ASCENDING))
        self.assertEqual([d["_id"] for d in docs], list(range(23)))
        names = self.commands.names()
        # 23 docs in batches of 5: find + 4 getMores (5, 5, 5, 3).
        self.assertEqual(names, ["find"] + ["getMore"] * 4)
        replies = self.commands.succeeded_events
        self.assertEqual(len(replies[0].reply["cursor"]["firstBatch"]), 5)
        self.assertNotEqual(replies[0].reply["cursor"]["id"], 0)
        self.assertEqual(replies[-1].reply["cursor"]["id"], 0)
        self.assertEqual(len(replies[-1].reply["cursor"]["nextBatch"]), 3)
        self.assertEqual(replies[0].reply["cursor"]["ns"], "varanus_it.c")

        self.assertEqual(c.find_one({"_id": 7})["k"], 1)
        self.assertIsNone(c.find_one({"_id": 99}))
        self.assertEqual(sorted(d["_id"] for d in c.find({"k": 2})), [2, 5, 8, 11, 14, 17, 20])
        self.assertEqual([d["_id"] for d in c.find().sort("_id", -1).limit(3)], [22, 21, 20])
        self.assertEqual(list(c.find({"_id": 3}, {"k": 0})), [{"_id": 3}])
        self.assertEqual([d["_id"] for d in c.find({"_id": {"$gte": 20}})], [20, 21, 22])

    def test_exhaust_cursor(self):
        c = self.db.c
        c.insert_many([{"_id": i, "pad": "x" * 100} for i in range(50)])
        before = stub_counters(self.client)
        self.commands.reset()
        cur = c.find({}, cursor_type=CursorType.EXHAUST, batch_size=7)
        ids = [d["_id"] for d in cur]
        self.assertEqual(sorted(ids), list(range(50)))
        after = stub_counters(self.client)
        # PyMongo 3.11 sends exhaust queries as legacy OP_QUERY with the Exhaust
        # flag; the stub then streamed 50/7 -> 8 OP_REPLY batches, 7 of them unasked.
        self.assertEqual(after["exhaustOpReplyOut"] - before["exhaustOpReplyOut"], 7)
        self.assertGreater(after["opQueryIn"], before["opQueryIn"])
        names = self.commands.names()
        self.assertEqual(names[0], "find")
        self.assertEqual(names.count("getMore"), 7)
        self.assertEqual(self.commands.failed_events, [])

    def test_update_and_delete(self):
        c = self.db.c
        c.insert_many([{"_id": i, "n": i, "tag": "a" if i < 5 else "b"} for i in range(10)])
        r = c.update_one({"_id": 3}, {"$set": {"x": 1}, "$inc": {"n": 10}})
        self.assertEqual((r.matched_count, r.modified_count), (1, 1))
        self.assertEqual(c.find_one({"_id": 3}), {"_id": 3, "n": 13, "tag": "a", "x": 1})
        r = c.update_many({"tag": "b"}, {"$set": {"tag": "c"}})
        self.assertEqual((r.matched_count, r.modified_count), (5, 5))
        r = c.replace_one({"_id": 4}, {"replaced": True})
        self.assertEqual(r.modified_count, 1)
        self.assertEqual(c.find_one({"_id": 4}), {"_id": 4, "replaced": True})
        r = c.update_one({"_id": 100}, {"$set": {"u": 1}}, upsert=True)
        self.assertEqual(r.upserted_id, 100)
        self.assertEqual(c.find_one({"_id": 100}), {"_id": 100, "u": 1})
        r = c.delete_one({"tag": "a"})
        self.assertEqual(r.deleted_count, 1)
        r = c.delete_many({"tag": "c"})
        self.assertEqual(r.deleted_count, 5)
        self.assertEqual(c.count_documents({}), 5)
        update_replies = [e.reply for e in self.commands.succeeded_events if e.command_name == "update"]
        self.assertEqual(update_replies[-1]["upserted"], [{"index": 0, "_id": 100}])

    def test_find_and_modify(self):
        c = self.db.c
        c.insert_many([{"_id": i, "n": i} for i in range(5)])
        before = c.find_one_and_update({"n": {"$gte": 2}}, {"$inc": {"n": 100}}, sort=[("n", -1)])
        self.assertEqual(before, {"_id": 4, "n": 4})
        self.assertEqual(c.find_one({"_id": 4})["n"], 104)
        after = c.find_one_and_update(
            {"_id": 9}, {"$set": {"n": 9}}, upsert=True, return_document=pymongo.ReturnDocument.AFTER
        )
        self.assertEqual(after, {"_id": 9, "n": 9})
        self.assertEqual(c.find_one_and_delete({"_id": 0}), {"_id": 0, "n": 0})
        self.assertIsNone(c.find_one_and_delete({"_id": 0}))
        self.assertEqual(c.count_documents({}), 5)

    def test_bad_update_operator(self):
        self.db.c.insert_one({"_id": 1})
        with self.assertRaises(WriteError) as cm:
            self.db.c.update_one({"_id": 1}, {"$foo": {"a": 1}})
        self.assertEqual(cm.exception.code, 9)
        self.assertIn("Unknown modifier: $foo", str(cm.exception))
        with self.assertRaises(OperationFailure) as cm:
            list(self.db.c.find({"a": {"$bogus": 1}}))
        self.assertEqual(cm.exception.code, 2)

    def test_count(self):
        c = self.db.c
        c.insert_many([{"_id": i, "even": i % 2 == 0} for i in range(11)])
        self.commands.reset()
        self.assertEqual(c.count_documents({}), 11)
        self.assertEqual(c.count_documents({"even": True}), 6)
        self.assertEqual(c.count_documents({"even": True}, skip=2, limit=3), 3)
        self.assertEqual(c.count_documents({"nothing": 1}), 0)
        self.assertEqual(c.estimated_document_count(), 11)
        names = self.commands.names()
        self.assertEqual(names[:4], ["aggregate"] * 4)
        pipeline = self.commands.started_events[0].command["pipeline"]
        self.assertEqual(pipeline[-1], {"$group": {"_id": 1, "n": {"$sum": 1}}})

    def test_duplicate_key(self):
        c = self.db.c
        c.insert_one({"_id": "dup"})
        with self.assertRaises(DuplicateKeyError) as cm:
            c.insert_one({"_id": "dup"})
        err = cm.exception.details
        self.assertEqual(cm.exception.code, 11000)
        self.assertEqual(err["keyValue"], {"_id": "dup"})
        self.assertEqual(err["keyPattern"], {"_id": 1})
        self.assertEqual(
            err["errmsg"],
            'E11000 duplicate key error collection: varanus_it.c index: _id_ dup key: { _id: "dup" }',
        )
        # A write error is a *succeeded* command with ok: 1 and writeErrors.
        last = self.commands.succeeded_events[-1]
        self.assertEqual(last.command_name, "insert")
        self.assertEqual(last.reply["ok"], 1.0)
        self.assertEqual(last.reply["writeErrors"][0]["index"], 0)
        # Unordered: the other documents still go in.
        with self.assertRaises(pymongo.errors.BulkWriteError) as cm:
            c.insert_many([{"_id": 1}, {"_id": "dup"}, {"_id": 2}], ordered=False)
        self.assertEqual(cm.exception.details["nInserted"], 2)

    def test_unknown_command(self):
        with self.assertRaises(OperationFailure) as cm:
            self.db.command("noSuchThing")
        self.assertEqual(cm.exception.code, 59)
        self.assertEqual(cm.exception.details["codeName"], "CommandNotFound")
        self.assertEqual(cm.exception.details["errmsg"], "no such command: 'noSuchThing'")
        failed = self.commands.failed_events
        self.assertEqual([e.command_name for e in failed], ["noSuchThing"])
        self.assertEqual(failed[0].failure["code"], 59)

    def test_auth_is_refused(self):
        with self.assertRaises(OperationFailure) as cm:
            self.client.admin.command("saslStart", mechanism="SCRAM-SHA-256", payload=b"x")
        self.assertEqual(cm.exception.code, 18)

    def test_unacknowledged_writes(self):
        c = self.db.get_collection("c", write_concern=WriteConcern(w=0))
        before = stub_counters(self.client)["moreToComeIn"]
        r = c.insert_one({"_id": "w0"})
        self.assertFalse(r.acknowledged)
        # (PyMongo sends an *ordered* w=0 insert_many acknowledged, to stop at
        # the first error; unordered goes out with moreToCome.)
        c.insert_many([{"_id": i} for i in range(5)], ordered=False)
        c.update_one({"_id": "w0"}, {"$set": {"seen": True}})
        c.delete_one({"_id": 4})
        # Same connection (maxPoolSize=1): the reads below follow the writes.
        self.assertEqual(self.db.c.find_one({"_id": "w0"}), {"_id": "w0", "seen": True})
        self.assertEqual(self.db.c.count_documents({}), 5)
        self.assertEqual(stub_counters(self.client)["moreToComeIn"] - before, 4)
        # The driver reports unacknowledged writes as succeeded with {ok: 1}.
        unack = [e for e in self.commands.succeeded_events if e.command_name == "insert"]
        self.assertEqual(unack[0].reply, {"ok": 1})

    def test_catalog_commands(self):
        self.db.create_collection("c")
        with self.assertRaises(OperationFailure) as cm:
            self.db.command("create", "c")
        self.assertEqual(cm.exception.code, 48)
        self.assertIn("c", self.db.list_collection_names())
        self.assertIn("varanus_it", self.client.list_database_names())
        self.db.c.create_index("k", name="k_1")
        self.assertEqual(sorted(self.db.c.index_information()), ["_id_", "k_1"])
        self.db.drop_collection("c")
        self.assertNotIn("c", self.db.list_collection_names())

    def test_sleep_command(self):
        import time

        t0 = time.monotonic()
        self.client.admin.command("sleep", 1, millis=200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.19)

    def test_streaming_heartbeats(self):
        # heartbeatFrequencyMS=500: the streaming monitor's awaitable hellos
        # come back every 500 ms (maxAwaitTimeMS), each with moreToCome.
        self.assertTrue(self.heartbeats.done.wait(TIMEOUT), "no awaited heartbeats")
        self.assertGreaterEqual(stub_counters(self.client)["awaitedHelloOut"], 2)


class PlainTest(WorkloadMixin, unittest.TestCase):
    compressors = None

    def test_no_compression(self):
        counters = stub_counters(self.client)
        self.assertEqual(sum(counters["compressedIn"].values()), 0)
        self.assertEqual(sum(counters["compressedOut"].values()), 0)


def _compressed(name):
    class CompressedTest(WorkloadMixin, unittest.TestCase):
        compressors = name

        def test_compression_used(self):
            self.db.c.insert_many([{"_id": i, "s": "abc" * 50} for i in range(20)])
            self.assertEqual(len(list(self.db.c.find())), 20)
            counters = stub_counters(self.client)
            self.assertGreater(counters["compressedIn"][name], 0)
            self.assertGreater(counters["compressedOut"][name], 0)
            others = [k for k in counters["compressedIn"] if k != name]
            self.assertEqual(sum(counters["compressedIn"][k] for k in others), 0)

    CompressedTest.__name__ = CompressedTest.__qualname__ = f"Compressed{name.capitalize()}Test"
    return CompressedTest


CompressedZlibTest = _compressed("zlib")
CompressedSnappyTest = _compressed("snappy")
CompressedZstdTest = _compressed("zstd")


class ReplicaSetTest(unittest.TestCase):
    """Three members in one stub process; discovery, then a stepDown."""

    def test_discovery_and_step_down(self):
        with start_stub(None, "--replset", "rs0", "--members", "3", members=3) as stub:
            self.assertEqual(len(stub.addresses), 3)
            roles = {}  # latest {address: "primary" | "secondary"} seen by the driver
            changed = threading.Condition()
            SERVER_TYPE = pymongo.server_type.SERVER_TYPE

            class Topo(monitoring.TopologyListener):
                def opened(self, event):
                    pass

                def closed(self, event):
                    pass

                def description_changed(self, event):
                    with changed:
                        roles.clear()
                        for s in event.new_description.server_descriptions().values():
                            if s.server_type == SERVER_TYPE.RSPrimary:
                                roles["%s:%d" % s.address] = "primary"
                            elif s.server_type == SERVER_TYPE.RSSecondary:
                                roles["%s:%d" % s.address] = "secondary"
                        changed.notify_all()

            def wait_roles(primary):
                want = {a: "primary" if a == primary else "secondary" for a in stub.addresses}
                with changed:
                    self.assertTrue(changed.wait_for(lambda: roles == want, TIMEOUT), roles)

            commands = Commands()
            client = MongoClient(
                stub.addresses[0],
                replicaSet="rs0",
                serverSelectionTimeoutMS=5000,
                heartbeatFrequencyMS=500,
                event_listeners=[Topo(), commands],
            )
            try:
                # Seeded with one member, the driver discovers all three.
                wait_roles(stub.addresses[0])
                client.test.c.insert_one({"_id": 1})
                self.assertEqual("%s:%d" % client.primary, stub.addresses[0])
                hello = client.admin.command("isMaster")
                self.assertEqual(hello["setName"], "rs0")
                self.assertEqual(hello["primary"], stub.addresses[0])
                self.assertEqual(hello["me"], stub.addresses[0])
                self.assertEqual(sorted(hello["hosts"]), sorted(stub.addresses))
                self.assertIsInstance(hello["electionId"], ObjectId)

                counter = hello["topologyVersion"]["counter"]
                self.assertEqual(client.admin.command("replSetStepDown", 10)["ok"], 1.0)
                # The streaming monitors wake at once (heartbeats are 500 ms
                # apart, the wait below would notice a slow path only by timing
                # out after TIMEOUT); member 1 is the new primary.
                wait_roles(stub.addresses[1])
                hello = client.admin.command("isMaster")
                self.assertEqual(hello["primary"], stub.addresses[1])
                self.assertGreater(hello["topologyVersion"]["counter"], counter)

                commands.reset()
                client.test.c.insert_one({"_id": 2})
                inserts = [e for e in commands.succeeded_events if e.command_name == "insert"]
                self.assertEqual("%s:%d" % inserts[-1].connection_id, stub.addresses[1])
                self.assertEqual(client.test.c.count_documents({}), 2)
            finally:
                client.close()

    def test_write_to_secondary_is_refused(self):
        with start_stub(None, "--replset", "rs1", "--members", "2", members=2) as stub:
            client = MongoClient(stub.addresses[1], directConnection=True, serverSelectionTimeoutMS=5000)
            try:
                hello = client.admin.command("isMaster")
                self.assertIs(hello["secondary"], True)
                self.assertIs(hello["ismaster"], False)
                with self.assertRaises(pymongo.errors.NotMasterError) as cm:
                    client.test.c.insert_one({"_id": 1})
                self.assertEqual(cm.exception.details["code"], 10107)
                self.assertEqual(cm.exception.details["codeName"], "NotWritablePrimary")
            finally:
                client.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
