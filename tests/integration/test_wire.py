#!/usr/bin/env python3
"""varanus-stub at the byte level: what no driver in this repo exercises.

A tiny raw-socket client (bson from python3-pymongo, zlib from the standard
library) checks the exhaust getMore chain (requestID / responseTo links and
moreToCome), the streaming hello chain and its wake-up on a topology
change, compression of replies (and its exemption for hello), and the fault
knobs (close after N messages with FIN or RST, reply delay).

Run: VARANUS_STUB=build/src/stub/varanus-stub python3 test_wire.py
"""

import os
import socket
import struct
import sys
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bson  # noqa: E402  (python3-pymongo's)

from harness import start_stub  # noqa: E402

OP_REPLY, OP_QUERY, OP_COMPRESSED, OP_MSG = 1, 2004, 2012, 2013
MORE_TO_COME, EXHAUST_ALLOWED = 1 << 1, 1 << 16


class Wire:
    """One connection speaking OP_MSG (optionally zlib-compressed)."""

    def __init__(self, address, timeout=10.0):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.next_id = 100

    def close(self):
        self.sock.close()

    def send_msg(self, body, flags=0, compress=False):
        self.next_id += 1
        payload = struct.pack("<I", flags) + b"\x00" + bson.encode(body)
        if compress:
            packed = zlib.compress(payload)
            msg = struct.pack("<iiB", OP_MSG, len(payload), 2) + packed
            header = struct.pack("<iiii", 16 + len(msg), self.next_id, 0, OP_COMPRESSED)
        else:
            msg = payload
            header = struct.pack("<iiii", 16 + len(msg), self.next_id, 0, OP_MSG)
        self.sock.sendall(header + msg)
        return self.next_id

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    def recv(self):
        """(requestID, responseTo, opcode on the wire, flags, body dict)."""
        length, request_id, response_to, opcode = struct.unpack("<iiii", self.recv_exact(16))
        rest = self.recv_exact(length - 16)
        wire_opcode = opcode
        if opcode == OP_COMPRESSED:
            opcode, size, compressor = struct.unpack("<iiB", rest[:9])
            self.assert_(compressor == 2, "only zlib is used here")
            rest = zlib.decompress(rest[9:])
            self.assert_(len(rest) == size, "uncompressedSize mismatch")
        self.assert_(opcode == OP_MSG, f"opcode {opcode}")
        (flags,) = struct.unpack("<I", rest[:4])
        self.assert_(rest[4] == 0, "kind-0 section first")
        return request_id, response_to, wire_opcode, flags, bson.decode(rest[5:])

    @staticmethod
    def assert_(cond, what):
        if not cond:
            raise AssertionError(what)

    # -- legacy opcodes (4.x-era) -------------------------------------------
    def send_query(self, ns, query, n_return=0, flags=0, skip=0):
        self.next_id += 1
        msg = struct.pack("<i", flags) + ns.encode() + b"\x00" + struct.pack("<ii", skip, n_return)
        msg += bson.encode(query)
        self.sock.sendall(struct.pack("<iiii", 16 + len(msg), self.next_id, 0, OP_QUERY) + msg)
        return self.next_id

    def send_get_more(self, ns, n_return, cursor_id):
        self.next_id += 1
        msg = struct.pack("<i", 0) + ns.encode() + b"\x00" + struct.pack("<iq", n_return, cursor_id)
        self.sock.sendall(struct.pack("<iiii", 16 + len(msg), self.next_id, 0, 2005) + msg)
        return self.next_id

    def send_kill_cursors(self, ids):
        self.next_id += 1
        msg = struct.pack("<ii", 0, len(ids)) + b"".join(struct.pack("<q", i) for i in ids)
        self.sock.sendall(struct.pack("<iiii", 16 + len(msg), self.next_id, 0, 2007) + msg)

    def recv_reply(self):
        """OP_REPLY: (requestID, responseTo, responseFlags, cursorID, startingFrom, docs)."""
        length, request_id, response_to, opcode = struct.unpack("<iiii", self.recv_exact(16))
        rest = self.recv_exact(length - 16)
        self.assert_(opcode == OP_REPLY, f"opcode {opcode}")
        flags, cursor_id, starting_from, n = struct.unpack("<iqii", rest[:20])
        docs = bson.decode_all(rest[20:])
        self.assert_(len(docs) == n, "numberReturned")
        return request_id, response_to, flags, cursor_id, starting_from, docs

    def command(self, body, **kw):
        rid = self.send_msg(body, **kw)
        _, response_to, _, flags, reply = self.recv()
        assert response_to == rid
        assert flags & MORE_TO_COME == 0
        return reply


class WireTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stub = start_stub()

    @classmethod
    def tearDownClass(cls):
        cls.stub.stop()

    def setUp(self):
        self.w = Wire(self.stub.address)

    def tearDown(self):
        self.w.close()

    def test_exhaust_get_more_chain(self):
        w = self.w
        w.command({"drop": "ex", "$db": "wire"})
        r = w.command({"insert": "ex", "documents": [{"_id": i} for i in range(10)], "$db": "wire"})
        self.assertEqual(r["n"], 10)
        r = w.command({"find": "ex", "batchSize": 2, "$db": "wire"})
        cursor_id = r["cursor"]["id"]
        self.assertNotEqual(cursor_id, 0)
        rid = w.send_msg(
            {"getMore": bson.Int64(cursor_id), "collection": "ex", "batchSize": 3, "$db": "wire"},
            flags=EXHAUST_ALLOWED,
        )
        # 8 left in batches of 3: 3 (moreToCome), 3 (moreToCome), 2 (final, id 0).
        expect_to = rid
        sizes = []
        for i in range(3):
            request_id, response_to, _, flags, reply = w.recv()
            self.assertEqual(response_to, expect_to, f"reply {i} links to the previous one")
            expect_to = request_id
            sizes.append(len(reply["cursor"]["nextBatch"]))
            last = i == 2
            self.assertEqual(bool(flags & MORE_TO_COME), not last)
            self.assertEqual(reply["cursor"]["id"] == 0, last)
        self.assertEqual(sizes, [3, 3, 2])
        # The connection is usable again afterwards.
        self.assertEqual(w.command({"ping": 1, "$db": "admin"})["ok"], 1.0)

    def test_streaming_hello_chain(self):
        w = self.w
        hello = w.command({"hello": 1, "$db": "admin"})
        tv = hello["topologyVersion"]
        rid = w.send_msg(
            {"hello": 1, "topologyVersion": tv, "maxAwaitTimeMS": 150, "$db": "admin"},
            flags=EXHAUST_ALLOWED,
        )
        expect_to = rid
        t0 = time.monotonic()
        for _ in range(3):
            request_id, response_to, _, flags, reply = w.recv()
            self.assertEqual(response_to, expect_to)
            self.assertTrue(flags & MORE_TO_COME)
            self.assertEqual(reply["topologyVersion"], tv)
            expect_to = request_id
        # Three awaited replies, each after maxAwaitTimeMS.
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)

    def test_stale_topology_version_answers_at_once(self):
        w = self.w
        tv = w.command({"hello": 1, "$db": "admin"})["topologyVersion"]
        stale = {"processId": bson.ObjectId(), "counter": bson.Int64(0)}
        t0 = time.monotonic()
        reply = w.command(
            {"hello": 1, "topologyVersion": stale, "maxAwaitTimeMS": 5000, "$db": "admin"}
        )
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(reply["topologyVersion"], tv)

    def test_compressed_replies(self):
        w = self.w
        hello = w.command({"hello": 1, "compression": ["zstd", "zlib", "lz4"], "$db": "admin"})
        self.assertEqual(hello["compression"], ["zstd", "zlib"])
        rid = w.send_msg({"ping": 1, "$db": "admin"}, compress=True)
        _, response_to, wire_opcode, _, reply = w.recv()
        self.assertEqual((response_to, wire_opcode, reply["ok"]), (rid, OP_COMPRESSED, 1.0))
        # hello is never compressed, even when asked in a compressed message.
        rid = w.send_msg({"hello": 1, "$db": "admin"}, compress=True)
        _, response_to, wire_opcode, _, reply = w.recv()
        self.assertEqual((response_to, wire_opcode), (rid, OP_MSG))
        # A plain request gets a plain reply.
        w.send_msg({"ping": 1, "$db": "admin"})
        self.assertEqual(w.recv()[2], OP_MSG)

    def test_unacknowledged_write_gets_no_reply(self):
        w = self.w
        w.send_msg({"insert": "w0", "documents": [{"_id": 1}], "$db": "wire"}, flags=MORE_TO_COME)
        reply = w.command({"find": "w0", "filter": {"_id": 1}, "$db": "wire"})
        self.assertEqual(reply["cursor"]["firstBatch"], [{"_id": 1}])

    def test_legacy_query_get_more_kill_cursors(self):
        w = self.w
        w.command({"drop": "legacy", "$db": "wire"})
        w.command({"insert": "legacy", "documents": [{"_id": i} for i in range(10)], "$db": "wire"})
        # OP_QUERY on the collection, wrapped with $query/$orderby, batches of 3.
        rid = w.send_query("wire.legacy", {"$query": {}, "$orderby": {"_id": -1}}, n_return=3)
        _, response_to, flags, cursor_id, start, docs = w.recv_reply()
        self.assertEqual(response_to, rid)
        self.assertEqual([d["_id"] for d in docs], [9, 8, 7])
        self.assertEqual(start, 0)
        self.assertNotEqual(cursor_id, 0)
        self.assertEqual(flags & 2, 0)  # no QueryFailure
        rid = w.send_get_more("wire.legacy", 4, cursor_id)
        _, response_to, flags, same_id, start, docs = w.recv_reply()
        self.assertEqual((response_to, same_id, start), (rid, cursor_id, 3))
        self.assertEqual([d["_id"] for d in docs], [6, 5, 4, 3])
        w.send_kill_cursors([cursor_id])  # no reply; the next getMore finds nothing
        w.send_get_more("wire.legacy", 4, cursor_id)
        _, _, flags, cid, _, docs = w.recv_reply()
        self.assertEqual((flags & 1, cid, docs), (1, 0, []))  # CursorNotFound
        # A bad query operator is a QueryFailure with $err.
        w.send_query("wire.legacy", {"_id": {"$bogus": 1}})
        _, _, flags, _, _, docs = w.recv_reply()
        self.assertEqual(flags & 2, 2)
        self.assertEqual(docs[0]["code"], 2)

    def test_legacy_command_with_read_preference(self):
        w = self.w
        rid = w.send_query(
            "admin.$cmd",
            {"$query": {"ping": 1}, "$readPreference": {"mode": "secondaryPreferred"}},
            n_return=-1,
        )
        _, response_to, flags, cursor_id, _, docs = w.recv_reply()
        self.assertEqual((response_to, flags, cursor_id, docs), (rid, 0, 0, [{"ok": 1.0}]))
        w.send_query("admin.$cmd", {"isMaster": 1, "compression": ["zlib"]}, n_return=-1)
        hello = w.recv_reply()[5][0]
        self.assertEqual((hello["ismaster"], hello["compression"]), (True, ["zlib"]))
        w.send_query("admin.$cmd", {"nope": 1}, n_return=-1)
        self.assertEqual(w.recv_reply()[5][0]["code"], 59)

    def test_missing_db_is_an_error(self):
        reply = self.w.command({"ping": 1})
        self.assertEqual((reply["ok"], reply["code"]), (0.0, 40571))

    def test_close_after_with_fin(self):
        w = self.w
        r = w.command({"stubFault": 1, "closeAfter": 2, "thisConnection": True, "$db": "admin"})
        self.assertEqual(r["closeAfter"], 2)
        self.assertEqual(w.command({"ping": 1, "$db": "admin"})["ok"], 1.0)  # message 1
        w.send_msg({"ping": 1, "$db": "admin"})  # message 2: never answered
        self.assertEqual(w.sock.recv(16), b"")  # orderly close (FIN)

    def test_close_after_with_reset(self):
        w = self.w
        w.command({"stubFault": 1, "closeAfter": 1, "reset": True, "thisConnection": True, "$db": "admin"})
        w.send_msg({"ping": 1, "$db": "admin"})
        with self.assertRaises(ConnectionResetError):
            w.sock.recv(16)

    def test_delay_for_this_connection(self):
        w = self.w
        w.command({"stubFault": 1, "delayMs": 300, "thisConnection": True, "$db": "admin"})
        t0 = time.monotonic()
        w.command({"ping": 1, "$db": "admin"})
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        # Another connection is not delayed.
        other = Wire(self.stub.address)
        try:
            t0 = time.monotonic()
            other.command({"ping": 1, "$db": "admin"})
            self.assertLess(time.monotonic() - t0, 0.25)
        finally:
            other.close()

    def test_stub_fault_is_admin_only(self):
        reply = self.w.command({"stubFault": 1, "delayMs": 1, "$db": "test"})
        self.assertEqual((reply["ok"], reply["code"]), (0.0, 13))


class CommandLineFaultsTest(unittest.TestCase):
    def test_close_after_from_command_line(self):
        with start_stub(None, "--close-after", "3") as stub:
            w = Wire(stub.address)
            try:
                w.command({"ping": 1, "$db": "admin"})
                w.command({"ping": 1, "$db": "admin"})
                w.send_msg({"ping": 1, "$db": "admin"})
                self.assertEqual(w.sock.recv(16), b"")
            finally:
                w.close()

    def test_global_delay_set_by_admin_command(self):
        with start_stub() as stub:
            w = Wire(stub.address)
            try:
                w.command({"stubFault": 1, "delayMs": 250, "$db": "admin"})
                other = Wire(stub.address)
                t0 = time.monotonic()
                other.command({"ping": 1, "$db": "admin"})
                self.assertGreaterEqual(time.monotonic() - t0, 0.24)
                other.close()
                w.command({"stubFault": 1, "$db": "admin"})  # all knobs off again
            finally:
                w.close()


class ReplicaSetWireTest(unittest.TestCase):
    def test_step_down_wakes_streaming_hello(self):
        with start_stub(None, "--replset", "rs", "--members", "2", members=2) as stub:
            mon = Wire(stub.addresses[1])  # a secondary's monitor connection
            admin = Wire(stub.addresses[0])
            try:
                hello = mon.command({"hello": 1, "$db": "admin"})
                self.assertEqual(hello["primary"], stub.addresses[0])
                self.assertIs(hello["secondary"], True)
                mon.send_msg(
                    {
                        "hello": 1,
                        "topologyVersion": hello["topologyVersion"],
                        "maxAwaitTimeMS": 30000,
                        "$db": "admin",
                    },
                    flags=EXHAUST_ALLOWED,
                )
                got = {}

                def read():
                    got["t"] = time.monotonic()
                    got["reply"] = mon.recv()

                reader = threading.Thread(target=read)
                reader.start()
                t0 = time.monotonic()
                self.assertEqual(admin.command({"replSetStepDown": 10, "$db": "admin"})["ok"], 1.0)
                reader.join(10)
                self.assertFalse(reader.is_alive(), "streaming hello did not wake")
                # Answered on the change, long before maxAwaitTimeMS (30 s).
                self.assertLess(got["t"] - t0, 5.0)
                _, _, _, flags, reply = got["reply"]
                self.assertTrue(flags & MORE_TO_COME)
                self.assertEqual(reply["primary"], stub.addresses[1])
                self.assertIs(reply["isWritablePrimary"], True)
                self.assertGreater(reply["topologyVersion"]["counter"], hello["topologyVersion"]["counter"])
                # The old primary now refuses writes and says who the primary is.
                r = admin.command({"insert": "c", "documents": [{"_id": 1}], "$db": "t"})
                self.assertEqual((r["ok"], r["code"]), (0.0, 10107))
                h = admin.command({"hello": 1, "$db": "admin"})
                self.assertEqual((h["isWritablePrimary"], h["primary"]), (False, stub.addresses[1]))
            finally:
                mon.close()
                admin.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
