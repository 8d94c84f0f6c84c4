#!/usr/bin/env python3
"""The docs match the program.

1. Every key the README's "Event lines" table lists is one varanus emits in a
   workload that exercises each of them, and every key varanus emits there
   is in the table (so the two cannot drift apart).
2. `varanus --help` names no file a user does not have, and lists every
   signal varanus handles.

    test_docs_match.py VARANUS_BIN STUB_BIN README [unittest args]
"""
import json
import os
import re
import sys
import tempfile
import threading
import time
import unittest
import subprocess

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, start_stub, wait_for  # noqa: E402

from pymongo import CursorType, MongoClient, monitoring  # noqa: E402
from pymongo.errors import OperationFailure  # noqa: E402
from pymongo.write_concern import WriteConcern  # noqa: E402

VARANUS = STUB = README = ""
DEADLINE = 15.0


def readme_event_keys(text):
    """The keys in the first column of the table under '## Event lines'."""
    section = text.split("\n## Event lines", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        keys.update(re.findall(r"`([A-Za-z]+)`", first))
    return keys


class Awaited(monitoring.ServerHeartbeatListener):
    def __init__(self):
        self.done = threading.Event()

    def started(self, event):
        pass

    def succeeded(self, event):
        if event.awaited:
            self.done.set()

    def failed(self, event):
        pass




class EventKeysTest(unittest.TestCase):
    def test_readme_table_equals_emitted_keys(self):
        with open(README) as f:
            documented = readme_event_keys(f.read())
        self.assertIn("reason", documented)
        tmp = tempfile.mkdtemp(prefix="varanus-docs-")
        log = os.path.join(tmp, "events.jsonl")
        with start_stub(STUB) as stub, Server(
            [VARANUS, "--listen", "127.0.0.1:0", "--upstream", stub.address, "--log-file", log,
             "--max-document-length", "300"],
            address_from="stderr", address_regex=r"listening on ([^,\s]+)") as proxy:
            awaited = Awaited()
            client = MongoClient(proxy.uri(directConnection="true"), appname="docs-test",
                                 compressors="zlib", heartbeatFrequencyMS=500, maxPoolSize=1,
                                 event_listeners=[awaited])
            db = client.docs
            db.c.insert_many([{"_id": i, "pad": "x" * 400} for i in range(20)])  # cut command
            list(db.c.find({}, batch_size=5))                                    # cut reply, getMore
            list(db.c.find({}, cursor_type=CursorType.EXHAUST, batch_size=7))    # exhaust
            db.get_collection("c", write_concern=WriteConcern(w=0)).insert_one({"_id": "w0"})
            self.assertEqual(db.c.find_one({"_id": "w0"}), {"_id": "w0"})      # after the w:0
            with self.assertRaises(OperationFailure):
                db.command("noSuchCommand")                                     # failure
            with self.assertRaises(OperationFailure):
                client.admin.command("saslStart", mechanism="SCRAM-SHA-256", payload=b"x")
            self.assertTrue(awaited.done.wait(DEADLINE), "no awaited heartbeat")
            client.close()

            def closed_lines():
                if not os.path.exists(log):
                    return 0
                with open(log) as f:
                    return sum('"connectionClosed"' in line for line in f)

            wait_for(lambda: closed_lines() >= 2, "connectionClosed lines", timeout=DEADLINE)
        with open(log) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        emitted = set()
        for line in lines:
            emitted.update(line.keys())
        self.assertEqual(sorted(documented - emitted), [],
                         "documented in the README's table but never emitted")
        self.assertEqual(sorted(emitted - documented), [],
                         "emitted but missing from the README's table")


class HelpTest(unittest.TestCase):
    def test_help_names_no_missing_file_and_every_signal(self):
        text = subprocess.run([VARANUS, "--help"], capture_output=True, text=True,
                              check=True).stdout
        self.assertNotIn("DESIGN.md", text)
        self.assertNotIn("shared/", text)
        for signal_name in ("SIGINT", "SIGTERM", "SIGHUP"):
            self.assertIn(signal_name, text)
        self.assertIn("VARANUS_", text)
        self.assertIn("healthcheck", text)


if __name__ == "__main__":
    VARANUS, STUB, README = sys.argv[1:4]
    unittest.main(argv=[sys.argv[0]] + sys.argv[4:])
