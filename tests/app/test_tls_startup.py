#!/usr/bin/env python3
"""The varanus binary's start-up with TLS options: a certificate or key that
is missing, not PEM or mismatched is exit 2 with one line naming the file
and the reason; --check-config validates the files and prints the TLS values.

Environment: VARANUS_BIN (the binary), MAKE_CERTS (tests/support/make_certs.sh).
"""
import os
import shutil
import subprocess
import tempfile
import unittest

VARANUS = os.environ["VARANUS_BIN"]
MAKE_CERTS = os.environ["MAKE_CERTS"]


def run(*args, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARANUS_")}
    return subprocess.run([VARANUS, "--listen", "127.0.0.1:0", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


class TlsStartupTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="varanus-tls-startup-")
        subprocess.run(["bash", MAKE_CERTS, cls.dir], check=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def f(self, name):
        return os.path.join(self.dir, name)

    def assert_exit2(self, args, message):
        r = run(*args)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.strip().splitlines()[-1], message)
        self.assertEqual(r.stdout, "")

    def test_missing_certificate(self):
        missing = self.f("nope.pem")
        self.assert_exit2(["--tls-cert", missing, "--tls-key", self.f("server.key")],
                          f"varanus: TLS certificate file {missing}: cannot open: No such file or directory")

    def test_missing_key(self):
        missing = self.f("nope.key")
        self.assert_exit2(["--tls-cert", self.f("server.pem"), "--tls-key", missing],
                          f"varanus: TLS key file {missing}: cannot open: No such file or directory")

    def test_mismatched_key(self):
        self.assert_exit2(["--tls-cert", self.f("server.pem"), "--tls-key", self.f("client.key")],
                          f"varanus: TLS key file {self.f('client.key')}: the key does not match the certificate in "
                          f"{self.f('server.pem')}")

    def test_not_pem(self):
        text = self.f("not-pem.txt")
        with open(text, "w") as out:
            out.write("hello\n")
        self.assert_exit2(["--tls-cert", text, "--tls-key", self.f("server.key")],
                          f"varanus: TLS certificate file {text}: no PEM certificate in the file")

    def test_bad_upstream_ca(self):
        missing = self.f("nope-ca.pem")
        self.assert_exit2(["--upstream-tls", "--upstream-tls-ca", missing],
                          f"varanus: TLS CA file {missing}: cannot open: No such file or directory")

    def test_upstream_client_key_mismatch(self):
        self.assert_exit2(["--upstream-tls", "--upstream-tls-ca", self.f("ca.pem"), "--upstream-tls-cert",
                           self.f("client.pem"), "--upstream-tls-key", self.f("server.key")],
                          f"varanus: TLS client key file {self.f('server.key')}: the key does not match the "
                          f"certificate in {self.f('client.pem')}")

    def test_check_config_prints_tls_values(self):
        r = run("--check-config", "--tls-cert", self.f("chain.pem"), "--tls-key", self.f("chain.key"),
                "--tls-ca", self.f("ca.pem"), "--tls-min-version", "1.3", "--upstream-tls",
                "--upstream-tls-ca", self.f("ca.pem"))
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertIn(f"tlsCertFile {self.f('chain.pem')} (flag --tls-cert)", lines)
        self.assertIn(f"tlsCAFile {self.f('ca.pem')} (flag --tls-ca)", lines)
        self.assertIn("tlsMinVersion 1.3 (flag --tls-min-version)", lines)
        self.assertIn("upstreamTls true (flag --upstream-tls)", lines)
        self.assertIn("upstreamTlsInsecure false (default)", lines)

    def test_check_config_plaintext_defaults(self):
        r = run("--check-config")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("tlsCertFile (none: plaintext) (default)", r.stdout.splitlines())
        self.assertIn("upstreamTls false (default)", r.stdout.splitlines())

    def test_check_config_refuses_a_bad_key(self):
        r = run("--check-config", "--tls-cert", self.f("server.pem"), "--tls-key", self.f("ca.pem"))
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"TLS key file {self.f('ca.pem')}: no PEM private key in the file", r.stderr)


if __name__ == "__main__":
    unittest.main()
