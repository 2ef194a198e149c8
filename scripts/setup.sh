#!/usr/bin/env bash
# One-time setup on a fresh Debian/Ubuntu machine: system packages, npm dependencies, the native
# libtorch engine, the TypeScript build and the CIFAR-10 cache. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# libtorch (PyTorch's C++ library) is the compute engine; OpenBLAS makes its LAPACK calls ~4x faster;
# chromium opens report.html headless in the test suite (the report itself needs no browser).
need=()
for pkg in libtorch-dev libopenblas0-pthread chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

echo "setup: npm ci" >&2
npm ci --no-audit --no-fund
echo "setup: building the native engine" >&2
npm run build:native --silent
echo "setup: compiling TypeScript" >&2
npm run build --silent
echo "setup: fetching CIFAR-10" >&2
node dist/src/cli/main.js fetch-data
