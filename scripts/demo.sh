#!/usr/bin/env bash
# Quick start: installs what is missing, builds, then runs varanus in front
# of the project's stub upstream (no MongoDB needed), drives a PyMongo
# workload through it and shows the events varanus emitted.
# The events are kept in ./demo-events.jsonl for jq & co.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
TARGETS="varanus varanus-stub" bash scripts/build.sh
B=${BUILD_DIR:-build}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

wait_for() {  # wait_for FILE REGEX -> prints the first capture group
  local file=$1 re=$2 i
  for i in $(seq 1 100); do
    if line=$(grep -m1 -oE "$re" "$file" 2>/dev/null); then
      echo "$line" | sed -E "s/$re/\\1/"; return 0
    fi
    sleep 0.1
  done
  echo "demo: timed out waiting for /$re/ in $file:" >&2; cat "$file" >&2; return 1
}

"$B/src/stub/varanus-stub" --listen 127.0.0.1:0 > "$tmp/stub.out" 2> "$tmp/stub.err" &
pids+=($!)
upstream=$(wait_for "$tmp/stub.out" '^([0-9.]+:[0-9]+)$')
echo "demo: stub upstream (a mongod stand-in) on $upstream"

"$B/src/app/varanus" --listen 127.0.0.1:0 --upstream "$upstream" > demo-events.jsonl 2> "$tmp/varanus.err" &
vpid=$!
pids+=($vpid)
proxy=$(wait_for "$tmp/varanus.err" 'listening on ([0-9.]+:[0-9]+)')
echo "demo: varanus on $proxy -> $upstream; running a PyMongo workload through it"

/usr/bin/python3 scripts/demo_workload.py "mongodb://$proxy/?appname=demo-app&directConnection=true"

kill -TERM "$vpid"
wait "$vpid" || { echo "demo: varanus exited with $?" >&2; cat "$tmp/varanus.err" >&2; exit 1; }
echo
echo "demo: varanus emitted $(wc -l < demo-events.jsonl) event lines (demo-events.jsonl). Summary:"
/usr/bin/python3 - demo-events.jsonl <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"].startswith("command"):
        extra = e.get("hello", "")
        if e.get("redacted"): extra += " redacted"
        if e.get("unacknowledged"): extra += " unacknowledged"
        if "failure" in e: extra += " " + json.dumps(e["failure"])[:70]
        dur = e.get("durationMicros")
        print(f'  {e["event"]:17} {e["commandName"]:12} {e.get("databaseName",""):6} id={e["requestId"]:<11} '
              f'{"" if dur is None else str(dur) + " us":>9} {extra}')
    else:
        print(f'  {e["event"]:17} connection {e["connectionId"]} {e.get("client","")} {e.get("message","")}')
PY
echo
echo "demo: one line as written (pipe demo-events.jsonl into jq to explore):"
grep -m1 '"commandName":"find"' demo-events.jsonl || head -n1 demo-events.jsonl
