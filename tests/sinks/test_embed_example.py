#!/usr/bin/env python3
"""Runs examples/embed_proxy (varanus embedded in a program of its own, with
a user sink counting commands per appName) between PyMongo and varanus-stub,
and checks the counts it reports.

    test_embed_example.py EMBED_PROXY_BIN STUB_BIN
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Server, start_stub  # noqa: E402

from pymongo import MongoClient  # noqa: E402


def main() -> int:
    embed, stub_bin = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "counts.json")
        with start_stub(stub_bin) as stub:
            with Server([embed, "--listen", "127.0.0.1:0", "--upstream", stub.address, "--out", out],
                        address_from="stderr", address_regex=r"listening on (\S+)") as proxy:
                for app, n in (("shop", 7), ("billing", 3)):
                    client = MongoClient(proxy.uri(directConnection="true"), appname=app)
                    for i in range(n):
                        client.test.items.insert_one({"i": i})
                    client.close()
        with open(out) as f:
            counts = json.load(f)
    print("counts:", counts)
    # Each insert is one command; the driver may add endSessions at close.
    assert 7 <= counts.get("shop", 0) <= 8, counts
    assert 3 <= counts.get("billing", 0) <= 4, counts
    return 0


if __name__ == "__main__":
    sys.exit(main())
