#!/usr/bin/env bash
# Fetches node-llama-cpp (llama.cpp's Node binding) and its prebuilt CPU binary for linux-x64 into tests/.cache/node-llama-cpp/,
# for `metastone bench peer` (the llama.cpp side of the comparison, run by tests/tools/peer/llama-cpp-peer.mjs).
# Deliberately under tests/tools/peer/ and not tests/tools/: ./test.sh runs every tests/tools/*.sh, and CI must not download this
# (the peer bench is not part of CI's pass/fail).
# Idempotent and fast when cached. Needs node + npm and the npm registry. No install scripts run: the package's postinstall would
# look for (or build) other binaries; the one prebuilt CPU binary is installed explicitly instead of the GPU optional packages.
#
# Usage: tests/tools/peer/fetch-node-llama-cpp.sh [cache-dir]
# Prints the cache directory (the one holding node_modules/node-llama-cpp) on its last stdout line.
set -euo pipefail

# Pinned: the peer figures compare against this llama.cpp build.
VERSION="3.22.1"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${1:-$script_dir/../../.cache/node-llama-cpp}"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"
installed="$cache_dir/node_modules/node-llama-cpp/package.json"
binary="$cache_dir/node_modules/@node-llama-cpp/linux-x64/package.json"

if [[ -f "$installed" && -f "$binary" ]] && grep -q "\"version\": \"$VERSION\"" "$installed" && grep -q "\"version\": \"$VERSION\"" "$binary"; then
  echo "$cache_dir"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch-node-llama-cpp: npm not found on PATH" >&2; exit 2; }

cd "$cache_dir"
# A private package.json keeps npm from walking up into some other project's node_modules.
if [[ ! -f package.json ]]; then
  echo '{ "name": "metastone-node-llama-cpp-cache", "private": true, "type": "module" }' > package.json
fi
npm install --no-audit --no-fund --no-save --loglevel=error --ignore-scripts --omit=optional \
  "node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64@$VERSION" >&2

grep -q "\"version\": \"$VERSION\"" "$installed" || { echo "fetch-node-llama-cpp: node-llama-cpp@$VERSION missing after install" >&2; exit 3; }
[[ -f "$binary" ]] || { echo "fetch-node-llama-cpp: @node-llama-cpp/linux-x64@$VERSION missing after install" >&2; exit 3; }
echo "$cache_dir"
