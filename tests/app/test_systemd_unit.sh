#!/usr/bin/env bash
# config/varanus.service passes `systemd-analyze verify` with nothing said
# (a warning such as an unparsable value fails the test too), and keeps the
# hardening the issue asks for. The unit is checked in a scratch root
# holding the built executable at the path ExecStart names.
#   test_systemd_unit.sh UNIT VARANUS_BIN
set -euo pipefail
unit=$1
bin=$2
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (package systemd)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp "$bin" "$root/usr/local/bin/varanus"
cp /usr/bin/kill "$root/usr/bin/kill"  # procps
cp "$unit" "$root/etc/systemd/system/varanus.service"
cp -r /lib/systemd/system "$root/usr/lib/systemd/"
out=$(systemd-analyze verify --root="$root" varanus.service 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "systemd-analyze verify said:" >&2
  echo "$out" >&2
  exit 1
fi
for want in 'DynamicUser=yes' 'ProtectSystem=strict' 'NoNewPrivileges=yes' 'LogsDirectory=varanus' \
  'Environment=VARANUS_LOG_FILE=/var/log/varanus/'; do
  grep -q "^$want" "$unit" || { echo "unit lacks $want" >&2; exit 1; }
done
echo "systemd unit: verified, hardening present"
