"""Test certificates for the TLS integration tests: tests/support/make_certs.sh
run once per test process into a temporary directory (nothing is committed).
See make_certs.sh for the files (ca.pem, server.pem/.key, client-bundle.pem,
expired.pem, otherhost.pem, unknown.pem, chain.pem, server2.pem, ...)."""
import atexit
import os
import shutil
import subprocess
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CERTS = os.path.join(_HERE, "..", "support", "make_certs.sh")
_dir = None


def cert_dir() -> str:
    """The directory holding the certificates, made on first use."""
    global _dir
    if _dir is None:
        d = tempfile.mkdtemp(prefix="varanus-tls-it-")
        atexit.register(shutil.rmtree, d, True)
        subprocess.run(["bash", MAKE_CERTS, d], check=True)
        _dir = d
    return _dir


def cert(name: str) -> str:
    return os.path.join(cert_dir(), name)
