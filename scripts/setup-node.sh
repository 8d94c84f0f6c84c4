#!/usr/bin/env bash
# Installs the Node.js driver used by the integration tests, pinned by
# tests/integration/node/package-lock.json (npm ci: exact versions, no
# download scripts beyond the registry's packages).
set -euo pipefail
cd "$(dirname "$0")/../tests/integration/node"
[ -f package.json ] || exit 0
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
