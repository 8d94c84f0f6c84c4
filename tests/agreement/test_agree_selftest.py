"""Self-test of agree.py: hand-made recordings that agree pass, and each
kind of disagreement is caught with a message that names it.

Runs without varanus, the stub or any driver (CTest: agree.selftest).
"""
import copy
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agree  # noqa: E402


def d_ev(event, rid, name, db="test", conn="c1", **kw):
    e = {"event": event, "requestId": rid, "commandName": name, "databaseName": db, "connection": conn}
    if event != "commandStarted":
        e.setdefault("durationMicros", 500)
        e.setdefault("durationResolutionMicros", 1)
    e.update(kw)
    return e


def v_ev(event, rid, name, db="test", conn=1, **kw):
    e = {"t": "2026-01-01T00:00:00.000000Z", "event": event, "connectionId": conn,
         "client": "127.0.0.1:5000", "server": "127.0.0.1:27017", "serverConnectionId": 7,
         "requestId": rid, "commandName": name, "databaseName": db}
    if event != "commandStarted":
        e.setdefault("durationMicros", 300)
    e.update(kw)
    return e


def baseline():
    """A run on which the driver and varanus agree: a handshake and a heartbeat,
    an insert, a find with a getMore, an exhaust find streamed as two synthetic
    getMores, a failed command, a duplicate key, a w:0 insert and a saslStart."""
    drv, var = [], []
    var += [v_ev("connectionOpened", None, None, conn=1),
            v_ev("commandStarted", 11, "isMaster", "admin", hello="handshake", command={"isMaster": 1}),
            v_ev("commandSucceeded", 11, "isMaster", "admin", hello="handshake", reply={"ok": 1})]
    # insert (the driver shows the command without $db and lsid; varanus shows them)
    drv += [d_ev("commandStarted", 20, "insert", command={"insert": "c", "ordered": True,
                                                          "documents": [{"_id": 1, "x": 1.0}]}),
            d_ev("commandSucceeded", 20, "insert", reply={"n": 1, "ok": 1.0})]
    var += [v_ev("commandStarted", 20, "insert", command={"insert": "c", "ordered": True, "$db": "test",
                                                          "lsid": {"id": {"$binary": {"base64": "AA==", "subType": "04"}}},
                                                          "documents": [{"_id": 1, "x": 1}]}),
            v_ev("commandSucceeded", 20, "insert", reply={"n": 1, "ok": 1.0})]
    # find + getMore; a Node-style coarse duration (1 ms resolution)
    drv += [d_ev("commandStarted", 21, "find", command={"find": "c", "filter": {}, "batchSize": 2}),
            d_ev("commandSucceeded", 21, "find", durationMicros=0, durationResolutionMicros=1000),
            d_ev("commandStarted", 22, "getMore", command={"getMore": {"$numberLong": "5"}, "collection": "c"}),
            d_ev("commandSucceeded", 22, "getMore")]
    var += [v_ev("commandStarted", 21, "find", command={"find": "c", "filter": {}, "batchSize": 2, "$db": "test"}),
            v_ev("commandSucceeded", 21, "find", durationMicros=900),
            v_ev("commandStarted", 22, "getMore", command={"getMore": 5, "collection": "c", "$db": "test"}),
            v_ev("commandSucceeded", 22, "getMore")]
    # exhaust: legacy OP_QUERY find (no $db; the driver's event has an lsid
    # that was never sent), then two synthetic getMores with requestId 0.
    drv += [d_ev("commandStarted", 30, "find", command={"find": "c", "filter": {}, "batchSize": 2,
                                                        "lsid": {"id": "x"}}),
            d_ev("commandSucceeded", 30, "find"),
            d_ev("commandStarted", 0, "getMore", synthetic=True,
                 command={"getMore": 9, "collection": "c", "batchSize": 2}),
            d_ev("commandSucceeded", 0, "getMore", durationMicros=1),
            d_ev("commandStarted", 0, "getMore", synthetic=True,
                 command={"getMore": 9, "collection": "c", "batchSize": 2}),
            d_ev("commandSucceeded", 0, "getMore", durationMicros=1)]
    var += [v_ev("commandStarted", 30, "find", exhaust=True, command={"find": "c", "filter": {}, "batchSize": 2}),
            v_ev("commandSucceeded", 30, "find", exhaust=True),
            v_ev("commandStarted", 901, "getMore", exhaust=True, command={"getMore": 9, "collection": "c"}),
            v_ev("commandSucceeded", 901, "getMore", exhaust=True, durationMicros=50),
            v_ev("commandStarted", 902, "getMore", exhaust=True, command={"getMore": 9, "collection": "c"}),
            v_ev("commandSucceeded", 902, "getMore", exhaust=True, durationMicros=50)]
    # a failed command
    drv += [d_ev("commandStarted", 40, "frobnicate", command={"frobnicate": 1}),
            d_ev("commandFailed", 40, "frobnicate", failure={"ok": 0, "code": 59, "codeName": "CommandNotFound",
                                                            "errmsg": "no such command: 'frobnicate'"})]
    var += [v_ev("commandStarted", 40, "frobnicate", command={"frobnicate": 1, "$db": "test"}),
            v_ev("commandFailed", 40, "frobnicate", failure={"code": 59, "codeName": "CommandNotFound",
                                                            "errmsg": "no such command: 'frobnicate'"})]
    # duplicate key: succeeded with writeErrors
    dup = {"n": 0, "ok": 1, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"}]}
    drv += [d_ev("commandStarted", 41, "insert", command={"insert": "c", "documents": [{"_id": 1}]}),
            d_ev("commandSucceeded", 41, "insert", reply=dup)]
    var += [v_ev("commandStarted", 41, "insert", command={"insert": "c", "documents": [{"_id": 1}]}),
            v_ev("commandSucceeded", 41, "insert", reply=dup)]
    # w:0
    drv += [d_ev("commandStarted", 42, "insert", command={"insert": "c", "documents": [{"_id": 2}],
                                                          "writeConcern": {"w": 0}}),
            d_ev("commandSucceeded", 42, "insert", reply={"ok": 1})]
    var += [v_ev("commandStarted", 42, "insert", unacknowledged=True,
                 command={"insert": "c", "documents": [{"_id": 2}], "writeConcern": {"w": 0}}),
            v_ev("commandSucceeded", 42, "insert", unacknowledged=True, durationMicros=0, reply={"ok": 1})]
    # saslStart, redacted on both sides
    drv += [d_ev("commandStarted", 43, "saslStart", "admin", command={}),
            d_ev("commandFailed", 43, "saslStart", "admin",
                 failure={"ok": 0, "code": 18, "codeName": "AuthenticationFailed", "errmsg": "Authentication failed."})]
    var += [v_ev("commandStarted", 43, "saslStart", "admin", redacted=True, command={}),
            v_ev("commandFailed", 43, "saslStart", "admin", redacted=True,
                 failure={"code": 18, "codeName": "AuthenticationFailed"})]
    # a heartbeat on the same connection
    var += [v_ev("commandStarted", 50, "isMaster", "admin", hello="heartbeat", command={"isMaster": 1}),
            v_ev("commandSucceeded", 50, "isMaster", "admin", hello="heartbeat"),
            v_ev("connectionClosed", None, None)]
    return drv, var


def find(events, rid, event="commandStarted", nth=0):
    hits = [e for e in events if e.get("requestId") == rid and e.get("event") == event]
    return hits[nth]


class NormalizeTest(unittest.TestCase):
    def test_spellings_of_the_same_value_are_equal(self):
        eq = lambda a, b: agree.json_equal(agree.normalize(a), agree.normalize(b))  # noqa: E731
        self.assertTrue(eq({"$numberLong": "5"}, 5))
        self.assertTrue(eq(1.0, 1))
        self.assertTrue(eq({"$date": "2020-01-02T03:04:05Z"}, {"$date": "2020-01-02T03:04:05.000Z"}))
        self.assertTrue(eq({"$date": "1970-01-01T00:00:01Z"}, {"$date": {"$numberLong": "1000"}}))
        self.assertTrue(eq({"$oid": "AB" * 12}, {"$oid": "ab" * 12}))
        self.assertTrue(eq({"$binary": "AAE=", "$type": "0"}, {"$binary": {"base64": "AAE=", "subType": "00"}}))
        self.assertTrue(eq({"a": 1, "b": 2}, {"b": 2, "a": 1}))

    def test_different_values_differ(self):
        eq = lambda a, b: agree.json_equal(agree.normalize(a), agree.normalize(b))  # noqa: E731
        self.assertFalse(eq(True, 1))
        self.assertFalse(eq(1, 2))
        self.assertFalse(eq("1", 1))
        self.assertFalse(eq([1, 2], [2, 1]))
        self.assertFalse(eq({"a": 1}, {"a": 1, "b": 2}))
        self.assertFalse(eq({"$oid": "ab" * 12}, {"$oid": "ac" * 12}))
        self.assertFalse(eq(None, {}))


class AgreementTest(unittest.TestCase):
    def run_compare(self, drv, var, **kw):
        return agree.compare(drv, var, "selftest", **kw)

    def assertMismatch(self, drv, var, fragment, **kw):
        r = self.run_compare(drv, var, **kw)
        self.assertFalse(r.ok, f"expected a mismatch mentioning {fragment!r}:\n{r.report()}")
        self.assertTrue(any(fragment in e for e in r.errors),
                        f"no mismatch mentions {fragment!r}:\n{r.report()}")
        return r

    def test_agreeing_recordings_pass_with_counts(self):
        drv, var = baseline()
        r = self.run_compare(drv, var, expect_heartbeat=True)
        self.assertTrue(r.ok, r.report())
        self.assertEqual(r.driver_events, 20)
        self.assertEqual(r.matched_events, 20)
        self.assertEqual(r.missing, 0)
        self.assertEqual(dict(r.extras), {"handshake": 1, "heartbeat": 1})
        self.assertIn("selftest: 20 driver events, 20 matched, 0 missing; varanus extra: 2 hellos", r.summary())
        # the legacy find's lsid is noted, not held against varanus
        self.assertTrue(any("not on the wire" in n for n in r.notes), r.report())

    def test_missing_varanus_event(self):
        drv, var = baseline()
        var = [e for e in var if e.get("requestId") != 21]
        r = self.assertMismatch(drv, var, "varanus has no event for requestId 21")
        self.assertEqual(r.missing, 2)

    def test_command_name_differs(self):
        drv, var = baseline()
        find(var, 40)["commandName"] = "frob"
        find(var, 40, "commandFailed")["commandName"] = "frob"
        self.assertMismatch(drv, var, "commandName differs")

    def test_database_name_differs(self):
        drv, var = baseline()
        find(var, 20)["databaseName"] = "other"
        self.assertMismatch(drv, var, "databaseName differs")

    def test_outcome_differs(self):
        drv, var = baseline()
        find(var, 40, "commandFailed")["event"] = "commandSucceeded"
        self.assertMismatch(drv, var, "outcome differs")

    def test_command_value_differs(self):
        drv, var = baseline()
        find(var, 21)["command"]["batchSize"] = 3
        self.assertMismatch(drv, var, "key 'batchSize': driver 2 != varanus 3")

    def test_command_nested_value_differs(self):
        drv, var = baseline()
        find(var, 20)["command"]["documents"][0]["x"] = 2
        self.assertMismatch(drv, var, "key 'documents'")

    def test_command_key_missing(self):
        drv, var = baseline()
        del find(var, 20)["command"]["ordered"]
        self.assertMismatch(drv, var, "key 'ordered' missing")

    def test_lsid_missing_from_an_op_msg_command_is_a_mismatch(self):
        drv, var = baseline()
        find(drv, 21)["command"]["lsid"] = {"id": "x"}
        self.assertMismatch(drv, var, "key 'lsid' missing")

    def test_duration_longer_than_the_drivers(self):
        drv, var = baseline()
        find(var, 20, "commandSucceeded")["durationMicros"] = 502
        self.assertMismatch(drv, var, "exceeds the driver's 500 us")

    def test_duration_within_the_drivers_clock_resolution(self):
        drv, var = baseline()
        find(var, 20, "commandSucceeded")["durationMicros"] = 501  # driver 500 us, resolution 1 us
        find(var, 21, "commandSucceeded")["durationMicros"] = 1000  # driver 0 ms, resolution 1 ms
        r = self.run_compare(drv, var)
        self.assertTrue(r.ok, r.report())
        self.assertEqual(r.min_duration_slack, 0)

    def test_terminal_only_exhaust_batches(self):
        # libmongoc-style: further exhaust batches come as succeeded events
        # with no started event; they match varanus's exhaust events in order.
        drv, var = baseline()
        drv = [e for e in drv if not (e.get("requestId") == 0 and e["event"] == "commandStarted")]
        for e in drv:
            if e.get("requestId") == 0:
                e["requestId"] = 30
                e.pop("synthetic", None)
        r = self.run_compare(drv, var)
        self.assertTrue(r.ok, r.report())
        self.assertEqual((r.driver_events, r.matched_events), (18, 18))
        var = [e for e in var if e.get("requestId") != 902]
        self.assertMismatch(drv, var, "no varanus exhaust event left")

    def test_duration_beyond_a_coarse_clock(self):
        drv, var = baseline()
        find(var, 21, "commandSucceeded")["durationMicros"] = 1001
        self.assertMismatch(drv, var, "exceeds the driver's 0 us (+1000 us")

    def test_sensitive_command_not_redacted(self):
        drv, var = baseline()
        find(var, 43)["command"] = {"saslStart": 1, "payload": "secret"}
        self.assertMismatch(drv, var, "not redacted")

    def test_redacted_failure_keeps_errmsg(self):
        drv, var = baseline()
        find(var, 43, "commandFailed")["failure"]["errmsg"] = "Authentication failed."
        self.assertMismatch(drv, var, "redacted failure shows ['errmsg']")

    def test_failure_code_differs(self):
        drv, var = baseline()
        find(var, 40, "commandFailed")["failure"]["code"] = 60
        self.assertMismatch(drv, var, "failure code differs: driver 59, varanus 60")

    def test_write_errors_differ(self):
        drv, var = baseline()
        find(var, 41, "commandSucceeded")["reply"] = {"n": 0, "ok": 1}
        self.assertMismatch(drv, var, "writeErrors differ")

    def test_unacknowledged_flag_missing(self):
        drv, var = baseline()
        del find(var, 42)["unacknowledged"]
        self.assertMismatch(drv, var, "unacknowledged flag")

    def test_unacknowledged_without_w0(self):
        drv, var = baseline()
        find(var, 20)["unacknowledged"] = True
        self.assertMismatch(drv, var, "no w:0 write concern")

    def test_w0_sent_acknowledged_is_a_note(self):
        # Node 6.9: a w:0 insert sent without moreToCome gets a real reply.
        drv, var = baseline()
        find(drv, 42, "commandSucceeded")["reply"] = {"n": 1, "ok": 1}
        for e in var:
            if e.get("requestId") == 42:
                e.pop("unacknowledged", None)
        r = self.run_compare(drv, var)
        self.assertTrue(r.ok, r.report())
        self.assertTrue(any("no moreToCome" in n for n in r.notes), r.report())

    def test_no_duration_check_when_the_driver_did_not_wait(self):
        drv, var = baseline()
        find(drv, 20, "commandSucceeded")["reply"] = None
        find(var, 20, "commandSucceeded")["durationMicros"] = 10**6
        r = self.run_compare(drv, var)
        self.assertTrue(r.ok, r.report())
        self.assertTrue(any("did not wait" in n for n in r.notes), r.report())

    def test_wire_request_id_overrides_the_published_one(self):
        drv, var = baseline()
        for e in drv:
            if e.get("requestId") == 20:
                e["requestId"], e["wireRequestId"] = 19, 20
        self.assertTrue(self.run_compare(drv, var).ok)
        for e in drv:
            if e.get("requestId") == 19:
                e["wireRequestId"] = 21
        self.assertMismatch(drv, var, "commandName differs for requestId 21")

    def test_started_without_terminal(self):
        drv, var = baseline()
        var.remove(find(var, 50, "commandSucceeded"))
        self.assertMismatch(drv, var, "started event without a terminal event")

    def test_two_terminal_events(self):
        drv, var = baseline()
        var.append(copy.deepcopy(find(var, 22, "commandSucceeded")))
        self.assertMismatch(drv, var, "with no open started event")

    def test_unlabelled_extra_command(self):
        drv, var = baseline()
        var += [v_ev("commandStarted", 77, "ping", command={"ping": 1}), v_ev("commandSucceeded", 77, "ping")]
        self.assertMismatch(drv, var, "driver did not publish, not labelled")

    def test_unlabelled_handshake(self):
        drv, var = baseline()
        del find(var, 11)["hello"]
        self.assertMismatch(drv, var, "first command is not a labelled handshake")

    def test_missing_heartbeat(self):
        drv, var = baseline()
        var = [e for e in var if e.get("requestId") != 50]
        self.assertTrue(self.run_compare(drv, var).ok)
        self.assertMismatch(drv, var, "no heartbeat", expect_heartbeat=True)

    def test_driver_command_labelled_as_hello(self):
        drv, var = baseline()
        find(var, 21)["hello"] = "heartbeat"
        self.assertMismatch(drv, var, "labels a find as hello")

    def test_synthetic_exhaust_event_without_counterpart(self):
        drv, var = baseline()
        var = [e for e in var if e.get("requestId") != 902]
        self.assertMismatch(drv, var, "no varanus exhaust event left")

    def test_synthetic_exhaust_cursor_id_differs(self):
        drv, var = baseline()
        find(var, 902)["command"]["getMore"] = 10
        self.assertMismatch(drv, var, "key 'getMore': driver 9 != varanus 10")

    def test_server_connection_id_differs(self):
        drv, var = baseline()
        find(drv, 20)["serverConnectionId"] = 8
        self.assertMismatch(drv, var, "serverConnectionId differs")

    def test_empty_driver_recording(self):
        _, var = baseline()
        self.assertMismatch([], var, "published no command events")


class JsonLinesTest(unittest.TestCase):
    def test_invalid_line_is_an_error(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write('{"event": "commandStarted"}\n{"event": \n')
        try:
            with self.assertRaisesRegex(ValueError, ":2: not a JSON line"):
                agree.load_jsonl(f.name)
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
