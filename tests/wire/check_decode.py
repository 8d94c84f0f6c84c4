#!/usr/bin/env python3
"""Runs `varanus decode` on the recorded messages in tests/data/wire
(see its README) and checks every line it prints.

usage: check_decode.py VARANUS TESTDATA_DIR [testdata|truncated|usage]
"""
import json
import os
import subprocess
import sys
import tempfile

EXPECT = {
    # file: (opCode, requestId, responseTo, commandName, databaseName, sections)
    "handshake1.bin": ("OP_QUERY", 1, 0, "ismaster", "admin", None),
    "handshake2.bin": ("OP_REPLY", 290, 1, None, None, None),
    "handshake3.bin": ("OP_QUERY", 2, 0, "ismaster", "admin", None),
    "handshake4.bin": ("OP_REPLY", 291, 2, None, None, None),
    "handshake5.bin": ("OP_MSG", 3, 0, "buildInfo", "admin", 1),
    "handshake6.bin": ("OP_MSG", 292, 3, None, None, 1),
    "import.bin": ("OP_MSG", 7, 0, "insert", "monila", 2),
    "dollar_dot.bin": ("OP_MSG", 35, 0, "insert", "test", 1),
    "multi_section_insert.bin": ("OP_MSG", 15, 0, "insert", "test", 2),
    "multi_section_update.bin": ("OP_MSG", 11, 0, "update", "test", 2),
}


def run(varanus, args):
    p = subprocess.run([varanus, "decode", *args], capture_output=True, text=True, timeout=60)
    lines = [json.loads(l) for l in p.stdout.splitlines()]  # every line is JSON
    return p.returncode, lines, p.stderr


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def test_testdata(varanus, wire):
    files = sorted(f for f in os.listdir(wire) if f.endswith(".bin"))
    check(set(files) == set(EXPECT), f"files {files} vs expectations")
    rc, lines, err = run(varanus, [os.path.join(wire, f) for f in files])
    check(rc == 0, f"exit {rc}: {err}")
    check(len(lines) == len(files), f"{len(lines)} lines for {len(files)} files")
    for f, line in zip(files, lines):
        op, rid, rto, cmd, db, sections = EXPECT[f]
        size = os.path.getsize(os.path.join(wire, f))
        check(line["file"].endswith(f) and line["offset"] == 0, f"{f}: {line}")
        check(line["opCode"] == op, f"{f}: opCode {line['opCode']}")
        check(line["messageLength"] == size, f"{f}: messageLength")
        check(line["requestId"] == rid and line["responseTo"] == rto, f"{f}: ids")
        check(line.get("commandName") == cmd, f"{f}: commandName {line.get('commandName')}")
        check(line.get("databaseName") == db, f"{f}: databaseName {line.get('databaseName')}")
        check("flags" in line, f"{f}: flags")
        if op == "OP_MSG":
            check(line["sections"] == sections, f"{f}: sections {line['sections']}")
            check(isinstance(line["body"], dict), f"{f}: body")
            seqs = line["sequences"]
            check(len(seqs) == sections - 1, f"{f}: sequences {seqs}")
        else:
            check(isinstance(line["documents"], list) and line["documents"], f"{f}: documents")
    by = dict(zip(files, lines))
    check(by["multi_section_insert.bin"].get("checksumPresent") is True, "checksumPresent")
    check(by["multi_section_insert.bin"]["flags"] == 1, "flags 1")
    check(len(by["import.bin"]["sequences"]["documents"]) > 0, "import documents")
    check(by["handshake2.bin"]["documents"][0]["maxBsonObjectSize"] == 16777216, "reply doc")
    check(by["handshake1.bin"]["documents"][0]["client"]["driver"]["name"] == "nodejs", "query doc")

    # Frames back to back in one file: offsets follow the lengths.
    with tempfile.TemporaryDirectory() as d:
        both = os.path.join(d, "both.bin")
        a = open(os.path.join(wire, "handshake1.bin"), "rb").read()
        b = open(os.path.join(wire, "handshake2.bin"), "rb").read()
        open(both, "wb").write(a + b)
        rc, lines, err = run(varanus, [both])
        check(rc == 0 and len(lines) == 2, f"back to back: {rc} {lines}")
        check(lines[1]["offset"] == len(a) and lines[1]["responseTo"] == 1, "second offset")


def test_truncated(varanus, wire):
    with tempfile.TemporaryDirectory() as d:
        full = open(os.path.join(wire, "handshake5.bin"), "rb").read()
        good = open(os.path.join(wire, "handshake1.bin"), "rb").read()
        cut = os.path.join(d, "cut.bin")
        open(cut, "wb").write(good + full[:-10])  # one good frame, then a cut one
        bad = os.path.join(d, "bad.bin")
        open(bad, "wb").write(b"\x05\x00\x00\x00" + full[4:])  # messageLength 5
        nxt = os.path.join(wire, "handshake2.bin")
        rc, lines, err = run(varanus, [cut, bad, nxt])
        check(rc == 1, f"exit {rc}")
        check(len(lines) == 4, f"lines: {lines}")
        check(lines[0]["opCode"] == "OP_QUERY", "the good frame first")
        e = lines[1]
        check(e["file"] == cut and e["offset"] == len(good), f"error line {e}")
        check(e["error"] == "truncated" and "message" in e, f"error line {e}")
        e2 = lines[2]
        check(e2["file"] == bad and e2["error"] == "length_too_small" and e2["offset"] == 0, f"{e2}")
        check(lines[3]["opCode"] == "OP_REPLY", "decoding went on with the next file")
        check("cut.bin" in err and "bad.bin" in err, f"stderr: {err}")
        rc, lines, err = run(varanus, [os.path.join(d, "missing.bin")])
        check(rc == 1 and lines[0]["error"], "missing file")


def test_usage(varanus, _wire):
    rc, _, err = run(varanus, [])
    check(rc == 2 and "usage" in err, f"no files: {rc}")
    rc, _, _ = run(varanus, ["--bogus"])
    check(rc == 2, "unknown option")
    p = subprocess.run([varanus, "decode", "--help"], capture_output=True, text=True)
    check(p.returncode == 0 and "usage: varanus decode" in p.stdout, "decode --help")


if __name__ == "__main__":
    varanus, testdata, which = sys.argv[1], sys.argv[2], sys.argv[3]
    {"testdata": test_testdata, "truncated": test_truncated, "usage": test_usage}[which](
        varanus, os.path.join(testdata, "wire"))
    print("ok")
