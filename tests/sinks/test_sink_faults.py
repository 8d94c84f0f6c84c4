#!/usr/bin/env python3
"""Sinks failing, through the real varanus executable (issue 25):

- stdout a pipe nobody reads: the Prometheus counters still count every
  command (the slow sink starves no other), stdout's drops are its own, and
  SIGTERM ends within the grace period, saying what it could not write;
- a FIFO with no reader as --log-file: a clear start-up error at once.

    test_sink_faults.py VARANUS_BIN STUB_BIN [unittest args]
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import main_with_stub, wait_for  # noqa: E402

from pymongo import MongoClient  # noqa: E402

PROXY = STUB = STUB_ADDR = ""


def scrape(admin):
    out = {}
    for line in urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode(
            "utf-8").splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


class SinkFaults(unittest.TestCase):
    def test_stdout_nobody_reads_starves_no_other_sink_and_sigterm_is_bounded(self):
        with tempfile.TemporaryFile() as err:
            # stdout: a pipe this test never reads.
            proc = subprocess.Popen(
                [PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                 "--admin", "127.0.0.1:0", "--grace-period", "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            try:
                def stderr_text():
                    err.seek(0)
                    return err.read().decode("utf-8", "replace")
                listen = wait_for(lambda: re.search(r"listening on ([^\s,]+)", stderr_text()),
                                  "the listening line", timeout=15).group(1)
                admin = wait_for(lambda: re.search(r"admin endpoint on http://(\S+)",
                                                   stderr_text()),
                                 "the admin line", timeout=15).group(1)
                client = MongoClient(f"mongodb://{listen}/?directConnection=true")
                # ~1 KB of lines a ping: far past the pipe (64 KiB) and
                # stdout's 4 MiB of pending lines.
                pings = 10000
                for _ in range(pings):
                    client.admin.command("ping")
                client.close()
                series = 'varanus_commands_total{command="ping",database="admin",' \
                    'outcome="succeeded"}'
                got = wait_for(lambda: (lambda m: m if m.get(series) == pings else None)(
                    scrape(admin)), f"{series} == {pings}", timeout=30)
                self.assertGreater(got['varanus_sink_events_dropped_total{sink="stdout"}'], 0)
                self.assertEqual(got['varanus_sink_events_dropped_total{sink="prometheus"}'], 0)
                self.assertEqual(got["varanus_events_dropped_total"], 0)
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                rc = proc.wait(timeout=15)
                took = time.monotonic() - t0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            text = stderr_text()
            self.assertEqual(rc, 0, text[-2000:])
            # Grace period 1 s: the stuck reader holds nothing up past it.
            self.assertLess(took, 4.0, text[-2000:])
            self.assertRegex(text, r"sink stdout: \d+ events not written by the close deadline")

    def test_fifo_with_no_reader_as_log_file_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            fifo = os.path.join(tmp, "events.fifo")
            os.mkfifo(fifo)
            t0 = time.monotonic()
            r = subprocess.run([PROXY, "--listen", "127.0.0.1:0", "--upstream", STUB_ADDR,
                                "--log-file", fifo], capture_output=True, text=True, timeout=20)
            self.assertLess(time.monotonic() - t0, 5.0)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(f"open {fifo}: a FIFO with no reader", r.stderr)


if __name__ == "__main__":
    sys.exit(main_with_stub(sys.modules[__name__]))
