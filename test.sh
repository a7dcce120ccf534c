#!/usr/bin/env bash
# The one test command: ./test.sh
#   1. fetches test assets (every tests/tools/*.sh, e.g. fetch-qwen-tokenizer.sh; each must be idempotent),
#   2. runs every test project in MetaStone.Cluster.sln in Release,
#   3. prints "N passed, N failed, N skipped" summed over all test assemblies (from their TRX files)
#      and exits non-zero if anything failed, did not build, or produced no results.
# Host prerequisites (libstdc++ with GLIBCXX_3.4.32, redis-server, node) come from deploy/setup-host.sh;
# extra arguments go to `dotnet test` (e.g. ./test.sh --filter FullyQualifiedName~Doctor).
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1

say() { printf '[test] %s\n' "$*"; }

shopt -s nullglob
for fetch in tests/tools/*.sh; do
  say "assets: $fetch"
  bash "$fetch" || { say "FAILED: $fetch (test assets missing)"; exit 1; }
done
shopt -u nullglob

results="artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"

say "dotnet test MetaStone.Cluster.sln -c Release"
test_exit=0
# One TRX per test assembly (LogFilePrefix makes the names unique); the console logger prints per-assembly totals.
# A test that hangs for 10 minutes is killed and reported by name (blame-hang) instead of eating the CI time limit.
dotnet test MetaStone.Cluster.sln -c Release \
  --results-directory "$results" \
  --logger "trx;LogFilePrefix=metastone" \
  --logger "console;verbosity=minimal" \
  --blame-hang-timeout 10m --blame-hang-dump-type none \
  "$@" || test_exit=$?

# Sum the <Counters .../> of every TRX. Failures include errors, timeouts and aborts;
# skipped = tests that did not execute (xunit Skip shows up as total - executed, not in notExecuted).
counter() { # counter NAME LINE -> value of NAME="..." in LINE, 0 if absent
  local value
  value="$(printf '%s' "$2" | grep -oE " $1=\"[0-9]+\"" | grep -oE '[0-9]+' || true)"
  printf '%s' "${value:-0}"
}
passed=0; failed=0; skipped=0; trx_count=0
for trx in "$results"/*.trx; do
  [ -e "$trx" ] || continue
  trx_count=$((trx_count + 1))
  line="$(grep -oE '<Counters [^>]*>' "$trx" | head -1 || true)"
  passed=$((passed + $(counter passed "$line")))
  failed=$((failed + $(counter failed "$line") + $(counter error "$line") + $(counter timeout "$line") + $(counter aborted "$line")))
  skipped=$((skipped + $(counter total "$line") - $(counter executed "$line")))
done

say "$trx_count test assemblies reported (TRX files in $results)"
echo "$passed passed, $failed failed, $skipped skipped"

if [ "$test_exit" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$trx_count" -eq 0 ]; then
  say "FAILED (dotnet test exit code $test_exit)"
  exit 1
fi
