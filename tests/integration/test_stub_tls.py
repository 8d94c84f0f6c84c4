#!/usr/bin/env python3
"""varanus-stub serves TLS: PyMongo with tls=true and the test CA talks to it
directly (plaintext and mutual TLS); a plaintext client gets nothing; a bad
certificate file is a start-up error naming it.

    test_stub_tls.py [unittest args]      (VARANUS_STUB: the stub binary)
"""
import subprocess
import unittest

from pymongo import MongoClient
from pymongo.errors import ServerSelectionTimeoutError

from harness import start_stub, stub_binary, wait_for
from tls_certs import cert


def client(addr, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return MongoClient(f"mongodb://{addr}/", directConnection=True, **kw)


class StubTlsTest(unittest.TestCase):
    def test_pymongo_over_tls(self):
        with start_stub(None, "--tls-cert", cert("server.pem"), "--tls-key", cert("server.key")) as stub:
            wait_for(lambda: ", TLS)" in stub.stderr(), "the stub's start-up line saying TLS")
            with client(stub.address, tls=True, tlsCAFile=cert("ca.pem")) as c:
                self.assertEqual(c.admin.command("ping")["ok"], 1.0)
                c.db.things.insert_many([{"_id": i, "x": i * 2} for i in range(50)])
                self.assertEqual(c.db.things.count_documents({"x": {"$gte": 50}}), 25)
                self.assertEqual([d["_id"] for d in c.db.things.find({}, batch_size=7).sort("_id")], list(range(50)))
            # The chain file works as well (leaf + intermediate).
        with start_stub(None, "--tls-cert", cert("chain.pem"), "--tls-key", cert("chain.key")) as stub:
            with client(stub.address, tls=True, tlsCAFile=cert("ca.pem")) as c:
                self.assertEqual(c.admin.command("ping")["ok"], 1.0)

    def test_plaintext_client_is_refused(self):
        with start_stub(None, "--tls-cert", cert("server.pem"), "--tls-key", cert("server.key")) as stub:
            with client(stub.address, serverSelectionTimeoutMS=1500) as c:
                with self.assertRaises(ServerSelectionTimeoutError):
                    c.admin.command("ping")

    def test_mutual_tls(self):
        with start_stub(None, "--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                        "--tls-ca", cert("ca.pem")) as stub:
            with client(stub.address, tls=True, tlsCAFile=cert("ca.pem"),
                        tlsCertificateKeyFile=cert("client-bundle.pem")) as c:
                self.assertEqual(c.admin.command("ping")["ok"], 1.0)
            with client(stub.address, tls=True, tlsCAFile=cert("ca.pem"), serverSelectionTimeoutMS=1500) as c:
                with self.assertRaises(ServerSelectionTimeoutError):
                    c.admin.command("ping")

    def test_bad_certificate_file_is_exit_2(self):
        missing = cert("missing.pem")
        r = subprocess.run([stub_binary(), "--listen", "127.0.0.1:0", "--tls-cert", missing], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"TLS certificate file {missing}:", r.stderr)


if __name__ == "__main__":
    unittest.main()
