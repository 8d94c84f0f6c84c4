#!/usr/bin/env bash
# Builds the container image from the Dockerfile and tests it, with podman
# (no Docker engine on the project's machines). Idempotent: run it again and
# it reuses what is set up. Steps:
#   1. podman, runc, debootstrap installed; /etc/containers/containers.conf
#      set for this machine (no ulimits, cgroupfs, runc)
#   2. a local debian:12 base image (debootstrap; no registry is reachable),
#      tagged as every base name the Dockerfile uses
#   3. the image and its stub target built (--network host)
#   4. the stub image runs as upstream; the varanus image runs in front of
#      it, configured by VARANUS_* variables and a mounted config file
#   5. PyMongo through the container: commands relayed, events on stdout
#   6. the image's HEALTHCHECK command inside the container succeeds
#   7. `podman stop` ends it with exit status 0 within its stop timeout
#      while PyMongo holds idle pooled connections
# Everything runs on the host network, on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
say() { echo "container-test: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
IMAGE=${IMAGE:-localhost/varanus:test}
STUB_IMAGE=${STUB_IMAGE:-localhost/varanus-stub:test}
ROOTFS=${ROOTFS:-/var/tmp/varanus-debian12-rootfs}
STOP_TIMEOUT=10

# -- 1. podman ------------------------------------------------------------------
need=()
for p in podman runc debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
conf=/etc/containers/containers.conf
if ! grep -qs '^cgroup_manager = "cgroupfs"' "$conf" || ! grep -qs '^default_ulimits = \[\]' "$conf" ||
  ! grep -qs '^runtime = "runc"' "$conf"; then
  say "writing $conf"
  $SUDO python3 - "$conf" <<'PY'
import re, sys
path = sys.argv[1]
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
want = {"containers": {"default_ulimits": "[]"},
        "engine": {"cgroup_manager": '"cgroupfs"', "runtime": '"runc"'}}
for section, keys in want.items():
    for key, value in keys.items():
        text = re.sub(r"(?m)^\s*%s\s*=.*\n" % key, "", text)
    header = "[%s]" % section
    lines = "".join("%s = %s\n" % kv for kv in keys.items())
    if re.search(r"(?m)^\[%s\]\s*$" % section, text):
        text = re.sub(r"(?m)^\[%s\]\s*\n" % section, header + "\n" + lines, text, count=1)
    else:
        text += ("\n" if text and not text.endswith("\n") else "") + header + "\n" + lines
open(path, "w").write(text)
PY
fi

# -- 2. the base image ----------------------------------------------------------
bases=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' Dockerfile | sort -u)
if ! podman image exists localhost/debian:12; then
  if [ ! -f "$ROOTFS/.varanus-debootstrap-done" ]; then
    say "debootstrap bookworm into $ROOTFS"
    $SUDO rm -rf "$ROOTFS"
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    $SUDO debootstrap --variant=minbase bookworm "$ROOTFS" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    $SUDO touch "$ROOTFS/.varanus-debootstrap-done"
  fi
  say "importing $ROOTFS as debian:12"
  $SUDO tar -C "$ROOTFS" --exclude=./.varanus-debootstrap-done -c . |
    podman import - localhost/debian:12 >/dev/null
fi
for b in $bases; do
  podman image exists "localhost/$b" || podman tag localhost/debian:12 "localhost/$b"
done

# -- 3. build -------------------------------------------------------------------
# --format docker: the OCI image format has no HEALTHCHECK (podman drops it).
t0=$(date +%s)
say "building $IMAGE and $STUB_IMAGE"
podman build --format docker --network host --pull=never -t "$IMAGE" -f Dockerfile . >/tmp/varanus-container-build.log 2>&1 ||
  { tail -40 /tmp/varanus-container-build.log; fail "podman build"; }
podman build --format docker --network host --pull=never --target stub -t "$STUB_IMAGE" -f Dockerfile . \
  >>/tmp/varanus-container-build.log 2>&1 || { tail -40 /tmp/varanus-container-build.log; fail "podman build --target stub"; }
say "built in $(( $(date +%s) - t0 )) s"

# The runtime image: the executable, no compiler, no stub, a numeric user.
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = "10001:10001" ] || fail "image user is '$user', expected 10001:10001"
podman run --rm --network host --entrypoint sh "$IMAGE" -c \
  'test -x /usr/local/bin/varanus && ! command -v varanus-stub && ! command -v cc && ! command -v c++ &&
   test -f /usr/share/doc/varanus/LICENSE && test -f /usr/share/doc/varanus/NOTICE' >/dev/null ||
  fail "the runtime image holds a compiler or the stub, or lacks the licenses"

# -- 4. run ---------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stub_port=$(free_port)
proxy_port=$(free_port)
admin_port=$(free_port)
tmp=$(mktemp -d)
cleanup() {
  podman rm -f -t 0 varanus-ct-stub varanus-ct >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cleanup_pre() { podman rm -f -t 0 varanus-ct-stub varanus-ct >/dev/null 2>&1 || true; }
cleanup_pre
mkdir -p "$tmp"
# A mounted config file: what the environment does not say comes from it.
cat >"$tmp/varanus.json" <<JSON
{ "upstream": { "host": "127.0.0.1", "port": $stub_port }, "maxDocumentLength": 500 }
JSON
chmod 0644 "$tmp/varanus.json"

podman run -d --name varanus-ct-stub --network host "$STUB_IMAGE" --listen "127.0.0.1:$stub_port" >/dev/null
podman run -d --name varanus-ct --network host \
  -v "$tmp/varanus.json:/etc/varanus/varanus.json:ro,Z" \
  -e VARANUS_LISTEN="127.0.0.1:$proxy_port" -e VARANUS_ADMIN="127.0.0.1:$admin_port" \
  "$IMAGE" >/dev/null

# (The logs are read whole before grep: with pipefail, grep -q stopping
# early would fail the pipeline through podman's SIGPIPE.)
deadline=$(( $(date +%s) + 30 ))
until logs=$(podman logs varanus-ct 2>&1) && grep -q "listening on 127.0.0.1:$proxy_port" <<<"$logs"; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "$logs"; fail "varanus did not start"; }
  sleep 0.2
done
grep -q "upstream 127.0.0.1:$stub_port" <<<"$logs" ||
  { echo "$logs"; fail "the upstream did not come from the mounted config file"; }

# -- 5..7. a driver, the health check, stop ---------------------------------------
PROXY_PORT=$proxy_port STOP_TIMEOUT=$STOP_TIMEOUT /usr/bin/python3 - <<'PY'
import json, os, subprocess, sys, time
from pymongo import MongoClient

port = int(os.environ["PROXY_PORT"])
stop_timeout = int(os.environ["STOP_TIMEOUT"])


def check(cond, what):
    if not cond:
        print("container-test: FAIL:", what, file=sys.stderr)
        print(subprocess.run(["podman", "logs", "varanus-ct"], capture_output=True, text=True).stderr[-3000:], file=sys.stderr)
        sys.exit(1)


client = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", appname="container-test",
                     serverSelectionTimeoutMS=10000, maxPoolSize=4)
coll = client.ct.items
coll.insert_many([{"_id": i, "v": "x" * 20} for i in range(10)])
check(coll.count_documents({}) == 10, "documents round-trip through the container")
check(sorted(d["_id"] for d in coll.find({"_id": {"$lt": 3}})) == [0, 1, 2], "find")

# Events on the container's stdout, as JSON lines.
deadline = time.monotonic() + 15
while True:
    out = subprocess.run(["podman", "logs", "varanus-ct"], capture_output=True, text=True).stdout
    events = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    names = [e.get("commandName") for e in events if e.get("event") == "commandSucceeded"]
    if "insert" in names and "aggregate" in names and "find" in names:  # count_documents: aggregate
        break
    check(time.monotonic() < deadline, "insert/find events on stdout (got %r)" % names)
    time.sleep(0.2)
check(any(e.get("appName") == "container-test" for e in events), "appName in the events")

# The image's HEALTHCHECK command, run in the container.
hc = subprocess.run(["podman", "healthcheck", "run", "varanus-ct"], capture_output=True, text=True)
check(hc.returncode == 0, "podman healthcheck run: %d %s %s" % (hc.returncode, hc.stdout, hc.stderr))
ex = subprocess.run(["podman", "exec", "varanus-ct", "varanus", "healthcheck"], capture_output=True, text=True)
check(ex.returncode == 0 and ex.stdout.startswith("healthy: http://127.0.0.1:"), "varanus healthcheck: %r" % ex.stdout)

# podman stop while the client's pool holds idle connections open.
check(len(client.nodes) == 1, "client connected")
t0 = time.monotonic()
stop = subprocess.run(["podman", "stop", "-t", str(stop_timeout), "varanus-ct"], capture_output=True, text=True)
took = time.monotonic() - t0
check(stop.returncode == 0, "podman stop: " + stop.stderr)
state = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", "varanus-ct"],
                       capture_output=True, text=True).stdout.strip()
check(state == "0", "varanus exit status %s after podman stop (killed at the timeout?)" % state)
check(took < stop_timeout, "stop took %.1f s, the timeout is %d s" % (took, stop_timeout))
logs = subprocess.run(["podman", "logs", "varanus-ct"], capture_output=True, text=True)
check('"reason":"proxy stopped: connection idle"' in logs.stdout, "idle connections closed at once")
client.close()
print("container-test: driver, events, healthcheck ok; podman stop -> exit 0 in %.2f s" % took, file=sys.stderr)
PY
say "passed in $(( $(date +%s) - start )) s"
