#!/usr/bin/env python3
"""No secret of a real authentication leaks out of varanus (issue 25).

The stub implements SCRAM-SHA-1 and SCRAM-SHA-256 for real (createUser,
saslStart / saslContinue, speculative authentication in the handshake), so
PyMongo (and the Node driver, when scripts/setup-node.sh installed it:
tests/integration/node/auth.js) authenticates through varanus as against
mongod, and a wrong password fails. Then every secret of those exchanges (the stub answers them
on {stubScramSecrets: 1}, asked directly, never through varanus: passwords,
MongoDB's SCRAM-SHA-1 password digest, salted passwords, client and server
keys, nonces, proofs, signatures, payloads in text and base64), the
passwords of createUser / updateUser and the payloads of legacy
copydbsaslstart / authenticate commands are looked for in everything varanus
writes: each sink format (varanus, mongodb-log, lines: commands, documents
as strings, redaction values, no document length bound), stdout, stderr,
the OTLP spans (query text on), /metrics, /stats and /stats/commands.

    test_auth_secrets.py VARANUS_BIN STUB_BIN [unittest args]
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, main_with_stub, wait_for  # noqa: E402
from test_otlp_proxy import Receiver  # noqa: E402

from bson.binary import Binary  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from pymongo.errors import OperationFailure  # noqa: E402

PROXY = STUB = STUB_ADDR = ""
_NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration", "node")
NODE_AUTH = [shutil.which("node"), os.path.join(_NODE_DIR, "auth.js")] \
    if shutil.which("node") and os.path.isdir(os.path.join(_NODE_DIR, "node_modules")) else None

PASSWORDS = {"alice": "pw-Alice-7f3c9e1b", "bob": "pw-Bob-2d8a6c4f", "bob2": "pw-Bob-upd-5e1d7a9c"}
LEGACY_MARKER = b"legacy-secret-payload-93b1f0"


class AuthSecrets(unittest.TestCase):
    def test_no_secret_of_a_real_scram_exchange_reaches_any_output(self):
        rx = Receiver()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                p = lambda name: os.path.join(tmp, name)  # noqa: E731
                outputs = [
                    {"type": "file", "path": p("varanus.log"), "maxDocumentLength": 0},
                    {"type": "file", "path": p("mlog.log"), "format": "mongodb-log",
                     "maxDocumentLength": 0},
                    {"type": "file", "path": p("commands.log"), "lines": "commands",
                     "maxDocumentLength": 0},
                    {"type": "file", "path": p("strings.log"), "documents": "string",
                     "extendedJson": "canonical", "maxDocumentLength": 0},
                    {"type": "file", "path": p("values.log"), "redaction": "values"},
                    {"type": "stdout", "maxDocumentLength": 0},
                    {"type": "otlp", "endpoint": rx.url, "queryText": True,
                     "batchDelaySeconds": 0.05, "includeHellos": True},
                ]
                cfg = p("c.json")
                with open(cfg, "w") as f:
                    json.dump({"sinks": {"admin": {"listen": "127.0.0.1:0"},
                                         "outputs": outputs}}, f)
                with Server([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                             "--config", cfg], name="proxy", address_from="stderr",
                            address_regex=r"listening on ([^\s,]+)") as px:
                    admin = wait_for(lambda: re.search(r"admin endpoint on http://(\S+)",
                                                       px.stderr()), "the admin line").group(1)
                    host = px.address
                    # Users: alice straight on the stub; bob through varanus,
                    # then his password changed through varanus.
                    direct = MongoClient(f"mongodb://{STUB_ADDR}/?directConnection=true")
                    direct.admin.command("createUser", "alice", pwd=PASSWORDS["alice"], roles=[])
                    plain = MongoClient(f"mongodb://{host}/?directConnection=true")
                    plain.admin.command("createUser", "bob", pwd=PASSWORDS["bob"], roles=[])
                    plain.admin.command("updateUser", "bob", pwd=PASSWORDS["bob2"])
                    # Legacy commands that carry credentials.
                    for cmd in ("copydbsaslstart", "authenticate", "copydbgetnonce"):
                        with self.assertRaises(OperationFailure):
                            plain.admin.command(cmd, 1, mechanism="SCRAM-SHA-1",
                                                payload=Binary(LEGACY_MARKER),
                                                key=LEGACY_MARKER.decode(),
                                                nonce=LEGACY_MARKER.decode())
                    plain.close()
                    # Real authentications through varanus: each mechanism,
                    # and the default (negotiated; speculative in the hello).
                    for user, pw, mech in (("alice", PASSWORDS["alice"], "SCRAM-SHA-256"),
                                           ("alice", PASSWORDS["alice"], "SCRAM-SHA-1"),
                                           ("bob", PASSWORDS["bob2"], None)):
                        uri = f"mongodb://{user}:{pw}@{host}/?directConnection=true" \
                            "&authSource=admin" + (f"&authMechanism={mech}" if mech else "")
                        c = MongoClient(uri, serverSelectionTimeoutMS=5000)
                        self.assertEqual(c.admin.command("ping")["ok"], 1.0)
                        c.test.things.insert_one({"by": user})
                        c.close()
                    # The Node driver too, when it is installed (scripts/setup-node.sh).
                    if NODE_AUTH:
                        r = subprocess.run(NODE_AUTH + [host, "alice", PASSWORDS["alice"]],
                                           capture_output=True, text=True, timeout=120)
                        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                    # A wrong password fails: the stub checks the proof.
                    bad = MongoClient(f"mongodb://alice:wrong-{PASSWORDS['alice']}@{host}/"
                                      "?directConnection=true&authSource=admin",
                                      serverSelectionTimeoutMS=5000)
                    with self.assertRaises(OperationFailure):
                        bad.admin.command("ping")
                    bad.close()
                    secrets = direct.admin.command("stubScramSecrets")["secrets"]
                    direct.close()
                    scraped = {path: urllib.request.urlopen(f"http://{admin}{path}").read()
                               for path in ("/metrics", "/stats", "/stats/commands")}
                    stderr = px.stderr()
                # The proxy has stopped: every sink is flushed and closed.
                texts = {}
                for name in ("varanus.log", "mlog.log", "commands.log", "strings.log",
                             "values.log"):
                    with open(p(name), "rb") as f:
                        texts[name] = f.read()
                texts["stdout"] = "\n".join(px.stdout_lines()).encode()
                texts["stderr"] = stderr.encode()
                # The OTLP sink posts what it holds when the proxy stops.
                texts["otlp"] = json.dumps([r[1] for r in rx.requests]).encode()
                texts.update(scraped)
        finally:
            rx.stop()
        # The exchanges happened and were seen (or the test proves nothing).
        self.assertIn(b"saslContinue", texts["varanus.log"])
        self.assertIn(b"createUser", texts["varanus.log"])
        self.assertIn(b"updateUser", texts["varanus.log"])
        self.assertIn(b"copydbsaslstart", texts["varanus.log"])
        self.assertIn(b"saslContinue", texts["otlp"])
        self.assertGreater(len(secrets), 20)
        needles = set(s for s in secrets if len(s) >= 8)
        needles |= set(PASSWORDS.values()) | {LEGACY_MARKER.decode(),
                                              base64.b64encode(LEGACY_MARKER).decode()}
        for pw in PASSWORDS.values():
            needles.add(base64.b64encode(pw.encode()).decode())
        for where, text in texts.items():
            self.assertTrue(text, f"{where} is empty")
            for needle in needles:
                for form in {needle, json.dumps(needle)[1:-1]}:
                    self.assertNotIn(form.encode(), text,
                                     f"a secret ({needle[:6]}...) in {where}")


if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
