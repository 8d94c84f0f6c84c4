"""varanus as a test server, shared by tests/proxy's Python tests
(test_limits.py, test_faults.py): start it on 127.0.0.1:0 in front of an
upstream with its events in a file, read its port from its start-up line,
stop it with SIGTERM asserting exit 0 (harness.Server does the last two).

    with Proxy(PROXY, tmp, STUB_ADDR, "--idle-timeout", "0.5", admin=True) as px:
        ... px.address, px.events(), px.closed_events(), px.admin, open_fds(px.proc.pid)
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Server, free_port  # noqa: E402


def open_fds(pid):
    """How many descriptors process `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Proxy(Server):
    """varanus (`binary`) listening on 127.0.0.1:0 in front of `upstream`,
    its events as JSON lines in TMP/events.jsonl; `extra` arguments after
    those. admin=True: the admin endpoint on a free port (`.admin`, "HOST:PORT").
    prefix: a command that execs varanus (e.g. prlimit --nofile=64:64)."""

    def __init__(self, binary, tmp, upstream, *extra, admin=False, prefix=()):
        self.events_path = os.path.join(tmp, "events.jsonl")
        self.admin = f"127.0.0.1:{free_port()}" if admin else None
        argv = [*prefix, binary, "--listen", "127.0.0.1:0", "--upstream", upstream,
                "--log-file", self.events_path]
        if self.admin:
            argv += ["--admin", self.admin]
        super().__init__(argv + list(extra), address_from="stderr",
                         address_regex=r"listening on ([^\s,]+)")

    def events(self):
        """Every event line written so far, parsed (none before the file exists)."""
        try:
            with open(self.events_path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def closed_events(self):
        return [e for e in self.events() if e["event"] == "connectionClosed"]
