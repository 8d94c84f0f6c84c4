#!/usr/bin/env python3
"""Process harness for varanus's integration tests.

Starts servers (varanus-stub, and later varanus itself between a driver and
the stub), learns the address each one announces, runs a client against
them, and stops every server with SIGTERM, asserting a clean exit (code 0)
and showing the server's stderr when anything goes wrong.

Python API::

    from harness import Server, start_stub

    with start_stub(stub_bin) as stub:                  # prints 127.0.0.1:PORT first
        with Server([varanus_bin, "--listen", "127.0.0.1:0",
                     "--upstream", stub.address],
                    address_from="stderr",
                    address_regex=r"listening on (\\S+)") as proxy:
            client = MongoClient(proxy.uri(directConnection="true"))
    # leaving the block: SIGTERM, wait, assert exit code 0 (AssertionError with stderr)

Command line (used by CTest for the Node and libmongoc clients)::

    harness.py --server "BIN ARGS" [--server "BIN ARGS {addr0}"] ... -- CLIENT ARGS {uri}

Each --server is started in order; in later servers' and the client's
arguments, {addr0}, {addr1}, ... are the servers' addresses, {addr} the last
one, {uri} "mongodb://{addr}/". --address-regex N=REGEX reads server N's
address from its stderr with REGEX (group 1) instead of its first stdout
line; --lines N=K reads K address lines (replica-set stub: {addrN.K}). The
client's exit code is the harness's, and every server must exit 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import IO, List, Optional, Sequence

DEFAULT_START_TIMEOUT = 15.0
DEFAULT_STOP_TIMEOUT = 15.0


class HarnessError(AssertionError):
    """A server failed to start, announce its address or stop cleanly."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer port 0 where the server allows it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str = "condition", timeout: float = 30.0):
    """Polls `predicate` until it returns something truthy and returns that;
    at the deadline, an AssertionError naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def main_with_stub(module) -> int:
    """The main() of a test script run as `SCRIPT VARANUS_BIN STUB_BIN
    [unittest args]`: sets the module's PROXY, STUB and STUB_ADDR, runs its
    unittest cases against one stub, and returns the exit status."""
    module.PROXY, module.STUB = sys.argv[1], sys.argv[2]
    with start_stub(module.STUB) as stub:
        module.STUB_ADDR = stub.address
        prog = unittest.main(module=module, argv=[sys.argv[0]] + sys.argv[3:], exit=False)
    return 0 if prog.result.wasSuccessful() else 1


def wait_for_port(host: str, port: int, timeout: float = DEFAULT_START_TIMEOUT) -> None:
    """Blocks until host:port accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    last: Optional[Exception] = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:  # not listening yet
            last = e
            time.sleep(0.05)
    raise HarnessError(f"{host}:{port} did not accept connections within {timeout}s: {last}")


class Server:
    """A child process that announces its listening address.

    address_from="stdout": the first `lines` lines of stdout are addresses
    (the rest of stdout is drained and kept). address_from="stderr": the
    first stderr line matching `address_regex` gives the address (group 1).
    stderr is always captured to a file and shown when something fails.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: Optional[str] = None,
        address_from: str = "stdout",
        address_regex: Optional[str] = None,
        lines: int = 1,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        expected_exit: int = 0,
        env: Optional[dict] = None,
        cwd: Optional[str] = None,
    ) -> None:
        if address_from not in ("stdout", "stderr"):
            raise ValueError("address_from must be 'stdout' or 'stderr'")
        if address_from == "stderr" and not address_regex:
            raise ValueError("address_from='stderr' needs address_regex")
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.address_from = address_from
        self.address_regex = re.compile(address_regex) if address_regex else None
        self.lines = lines
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.expected_exit = expected_exit
        self.env = env
        self.cwd = cwd
        self.addresses: List[str] = []
        self.proc: Optional[subprocess.Popen] = None
        self._stdout_lines: List[str] = []
        self._stderr_file: Optional[IO[bytes]] = None
        self._ready = threading.Event()
        self._threads: List[threading.Thread] = []
        self.returncode: Optional[int] = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "Server":
        if self.proc is not None:
            return self  # already started (start_stub() then `with`)
        self._stderr_file = tempfile.TemporaryFile()
        stderr_target = subprocess.PIPE if self.address_from == "stderr" else self._stderr_file
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_target,
            env=self.env,
            cwd=self.cwd,
        )
        self._spawn(self._read_stdout)
        if self.address_from == "stderr":
            self._spawn(self._read_stderr)
        if not self._ready.wait(self.start_timeout) or len(self.addresses) < self.lines:
            self._kill()
            raise HarnessError(
                f"{self.name} did not announce {self.lines} address(es) within "
                f"{self.start_timeout}s (exit code {self.proc.poll()}):\n{self.stderr()}"
            )
        return self

    def stop(self) -> int:
        """SIGTERM, wait, and assert the expected exit code. Returns it."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise HarnessError(
                    f"{self.name} did not exit within {self.stop_timeout}s of SIGTERM:\n{self.stderr()}"
                )
        for t in self._threads:
            t.join(2.0)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self.returncode = self.proc.returncode
        if self.returncode != self.expected_exit:
            raise HarnessError(
                f"{self.name} exited with {self.returncode}, expected {self.expected_exit}:\n"
                f"{self.stderr()}"
            )
        return self.returncode

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stop()
            return
        # A test already failed: stop quietly, but show the server's side.
        try:
            self.stop()
        except HarnessError as e:
            sys.stderr.write(f"(while handling a failure) {e}\n")
        else:
            sys.stderr.write(f"--- {self.name} stderr ---\n{self.stderr()}\n")

    def __del__(self) -> None:
        if self._stderr_file is not None:
            self._stderr_file.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- what the process said ------------------------------------------
    @property
    def address(self) -> str:
        return self.addresses[0]

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def uri(self, **options: str) -> str:
        """mongodb://ADDRESS/?opt=value&... (all announced addresses)."""
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"mongodb://{','.join(self.addresses)}/" + (f"?{query}" if query else "")

    def stdout_lines(self) -> List[str]:
        return list(self._stdout_lines)

    def stderr(self) -> str:
        if self._stderr_file is None:
            return ""
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode("utf-8", "replace")

    # -- internals --------------------------------------------------------
    def _spawn(self, fn) -> None:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self._threads.append(t)

    def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._stdout_lines.append(line)
            if self.address_from == "stdout" and len(self.addresses) < self.lines:
                self.addresses.append(line.strip())
                if len(self.addresses) == self.lines:
                    self._ready.set()
        self._ready.set()  # EOF: let start() notice the missing address

    def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr and self._stderr_file and self.address_regex
        for raw in self.proc.stderr:
            self._stderr_file.write(raw)
            if len(self.addresses) < self.lines:
                m = self.address_regex.search(raw.decode("utf-8", "replace"))
                if m:
                    self.addresses.append(m.group(1))
                    if len(self.addresses) == self.lines:
                        self._ready.set()
        self._ready.set()

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def stub_binary() -> str:
    """The varanus-stub binary: $VARANUS_STUB, else the default build dir."""
    path = os.environ.get("VARANUS_STUB")
    if path:
        return path
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "build", "src", "stub", "varanus-stub")


def start_stub(binary: Optional[str] = None, *args: str, members: int = 1, **kw) -> Server:
    """A started varanus-stub on 127.0.0.1:0; extra args are passed through
    (e.g. "--replset", "rs0", "--members", "3" together with members=3)."""
    argv = [binary or stub_binary(), "--listen", "127.0.0.1:0", *args]
    return Server(argv, name="varanus-stub", lines=members, **kw).start()


# -- command line ----------------------------------------------------------
def _substitute(arg: str, servers: List[Server]) -> str:
    if not servers:
        return arg
    arg = arg.replace("{addr}", servers[-1].address).replace("{uri}", f"mongodb://{servers[-1].address}/")
    for i, s in enumerate(servers):
        for k, a in enumerate(s.addresses):
            arg = arg.replace(f"{{addr{i}.{k}}}", a)
        arg = arg.replace(f"{{addr{i}}}", s.address)
    return arg


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    ap = argparse.ArgumentParser(description="Start servers, run a client against them.")
    ap.add_argument("--server", action="append", default=[], help="server command line (shell quoting)")
    ap.add_argument("--address-regex", action="append", default=[], metavar="N=REGEX")
    ap.add_argument("--lines", action="append", default=[], metavar="N=K")
    ap.add_argument("--timeout", type=float, default=300.0, help="client timeout in seconds")
    opts = ap.parse_args(argv[:split])
    client = argv[split + 1 :]
    regexes = {int(k): v for k, v in (x.split("=", 1) for x in opts.address_regex)}
    lines = {int(k): int(v) for k, v in (x.split("=", 1) for x in opts.lines)}

    servers: List[Server] = []
    code = 1
    try:
        for i, cmd in enumerate(opts.server):
            args = [_substitute(a, servers) for a in shlex.split(cmd)]
            kw = {"address_from": "stderr", "address_regex": regexes[i]} if i in regexes else {}
            servers.append(Server(args, lines=lines.get(i, 1), **kw).start())
        cmd = [_substitute(a, servers) for a in client]
        print("harness: running " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
        try:
            code = subprocess.run(cmd, timeout=opts.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"harness: client timed out after {opts.timeout}s", file=sys.stderr)
            code = 124
    finally:
        for s in reversed(servers):
            try:
                s.stop()
            except HarnessError as e:
                print(f"harness: {e}", file=sys.stderr)
                code = code or 1
        if code != 0:
            for s in servers:
                print(f"--- {s.name} stderr ---\n{s.stderr()}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
