#!/usr/bin/env bash
# Fetches the official OpenAI JavaScript SDK (npm package `openai`) into tests/.cache/openai-npm/, for the gateway test that
# drives `metastone serve` from node (tests/MetaStone.Cluster.Tests/GatewayNodeSdkTests.cs runs tests/tools/openai-node-client.mjs).
# Idempotent and fast when cached: does nothing when the pinned version is installed. Needs node + npm and the npm registry.
#
# Usage: tests/tools/fetch-openai-npm.sh [cache-dir]
# Prints the cache directory (the one holding node_modules/openai) on its last stdout line.
set -euo pipefail

PACKAGE="openai"
# Pinned so the client under test cannot change between runs.
VERSION="6.9.1"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${1:-$script_dir/../.cache/openai-npm}"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"
installed="$cache_dir/node_modules/openai/package.json"

if [[ -f "$installed" ]] && grep -q "\"version\": \"$VERSION\"" "$installed"; then
  echo "$cache_dir"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch-openai-npm: npm not found on PATH" >&2; exit 2; }

cd "$cache_dir"
# A private package.json keeps npm from walking up into some other project's node_modules.
if [[ ! -f package.json ]]; then
  echo '{ "name": "metastone-openai-npm-cache", "private": true }' > package.json
fi
npm install --no-audit --no-fund --no-save --loglevel=error "$PACKAGE@$VERSION" >&2

grep -q "\"version\": \"$VERSION\"" "$installed" || { echo "fetch-openai-npm: $PACKAGE@$VERSION missing after install" >&2; exit 3; }
echo "$cache_dir"
