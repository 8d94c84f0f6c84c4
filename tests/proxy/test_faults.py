#!/usr/bin/env python3
"""Faults on either side of varanus, through the real executables (issue
25). For each: a bystander connection keeps working, every commandStarted
gets exactly one terminal event (commandSucceeded or commandFailed), and
varanus's open descriptors return to their baseline.

- a client that aborts mid-request (half a frame) and mid-reply;
- the upstream closing, and resetting, before it answers;
- an upstream unreachable at start that comes back;
- 50 clients killed at once (SIGKILL of the process holding them).

    test_faults.py VARANUS_BIN STUB_BIN [unittest args]
"""
import collections
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_harness import Proxy, open_fds  # noqa: E402  (puts ../integration on the path)
from harness import Server, free_port, main_with_stub, start_stub, wait_for  # noqa: E402
from test_wire import Wire  # noqa: E402

import bson  # noqa: E402

PROXY = STUB = STUB_ADDR = ""


def unterminated(events):
    """The commandStarted events without exactly one terminal event."""
    started = collections.Counter()
    ended = collections.Counter()
    for e in events:
        key = (e.get("connectionId"), e.get("requestId"))
        if e["event"] == "commandStarted":
            started[key] += 1
        elif e["event"] in ("commandSucceeded", "commandFailed"):
            ended[key] += 1
    return {k: (started[k], ended[k]) for k in set(started) | set(ended)
            if started[k] != 1 or ended[k] != 1}


class FaultsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def check_after(self, px, baseline, bystander, closed_at_least):
        bystander.send_msg({"ping": 1, "$db": "admin"})
        self.assertEqual(bystander.recv()[4]["ok"], 1.0)
        wait_for(lambda: len([e for e in px.events() if e["event"] == "connectionClosed"])
                 >= closed_at_least, f"{closed_at_least} connectionClosed events")
        try:
            wait_for(lambda: not unterminated(px.events()) or None,
                     "every started command ended exactly once")
        except AssertionError:
            raise AssertionError(f"not ended exactly once: {unterminated(px.events())}\n"
                                 + "\n".join(json.dumps(e) for e in px.events()[-30:]))
        wait_for(lambda: open_fds(px.proc.pid) <= baseline + 2,  # + the bystander's two
                 "descriptors back to the baseline")

    def test_client_aborts_mid_request_and_mid_reply(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR) as px:
            baseline = open_fds(px.proc.pid)
            bystander = Wire(px.address)
            # Mid-request: half a frame, then gone.
            msg = bson.encode({"ping": 1, "$db": "admin"})
            frame = struct.pack("<iiii", 21 + len(msg), 1, 0, 2013) + b"\x00" * 5 + msg
            s = socket.create_connection((px.host, px.port))
            s.sendall(frame[:len(frame) // 2])
            s.close()
            # Mid-reply: a large reply the client never reads.
            w = Wire(px.address)
            w.send_msg({"insert": "big", "documents": [{"pad": "x" * 100_000} for _ in range(30)],
                        "$db": "faults"})
            w.recv()
            w.send_msg({"find": "big", "batchSize": 30, "$db": "faults"})
            w.sock.recv(100)  # the first bytes of a ~3 MB reply, then gone
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.close()  # RST
            self.check_after(px, baseline, bystander, 2)
            bystander.close()

    def test_upstream_closes_or_resets_before_answering(self):
        for reset in (False, True):
            run_dir = os.path.join(self.tmp.name, f"reset-{reset}")  # an event log each
            os.makedirs(run_dir)
            with self.subTest(reset=reset), start_stub(STUB) as stub, \
                    Proxy(PROXY, run_dir, stub.address) as px:
                baseline = open_fds(px.proc.pid)
                bystander = Wire(px.address)
                victims = []
                for _ in range(5):
                    w = Wire(px.address)
                    # This connection's next message closes it unanswered.
                    w.send_msg({"stubFault": 1, "closeAfter": 1, "reset": reset,
                                "thisConnection": True, "$db": "admin"})
                    w.recv()
                    w.send_msg({"find": "c", "$db": "faults"})
                    victims.append(w)
                for w in victims:
                    with self.assertRaises((EOFError, ConnectionResetError)):
                        w.recv()
                    w.close()
                self.check_after(px, baseline, bystander, 5)
                failed = [e for e in px.events()
                          if e["event"] == "commandFailed" and e["commandName"] == "find"]
                self.assertEqual(len(failed), 5, failed)
                word = "reset" if reset else "closed"
                for e in failed:
                    self.assertIn(f"upstream {word}", json.dumps(e), e)
                bystander.close()

    def test_upstream_unreachable_then_back(self):
        port = free_port()
        with Proxy(PROXY, self.tmp.name, f"127.0.0.1:{port}", "--connect-timeout", "1") as px:
            s = socket.create_connection((px.host, px.port), timeout=5)
            self.assertEqual(s.recv(1), b"")  # closed: nothing listens there yet
            s.close()
            wait_for(lambda: "unreachable" in px.stderr(), "the unreachable line")
            # The upstream comes up on that port: the next client is served.
            with Server([STUB, "--listen", f"127.0.0.1:{port}"]):
                w = Wire(px.address)
                w.send_msg({"ping": 1, "$db": "admin"})
                self.assertEqual(w.recv()[4]["ok"], 1.0)
                w.close()

    def test_many_clients_killed_at_once(self):
        with Proxy(PROXY, self.tmp.name, STUB_ADDR) as px:
            baseline = open_fds(px.proc.pid)
            bystander = Wire(px.address)
            # A child process opens 50 connections, each with a request in
            # flight at the stub (sleep 5 s), and is SIGKILLed.
            code = (
                "import socket,struct,sys,time,bson\n"
                "b=bson.encode({'sleep':1,'millis':5000,'$db':'admin'})\n"
                "m=struct.pack('<iiii',21+len(b),1,0,2013)+b'\\0'*5+b\n"
                f"ss=[socket.create_connection(('{px.host}',{px.port})) for _ in range(50)]\n"
                "[s.sendall(m) for s in ss]\n"
                "print('ready',flush=True)\n"
                "time.sleep(60)\n")
            child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
            self.assertEqual(child.stdout.readline().strip(), b"ready")
            wait_for(lambda: len([e for e in px.events() if e["event"] == "commandStarted"
                                  and e["commandName"] == "sleep"]) == 50, "50 sleeps started")
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            self.check_after(px, baseline, bystander, 50)
            bystander.close()


if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
