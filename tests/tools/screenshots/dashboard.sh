#!/usr/bin/env bash
# Takes the picture of Orleans' dashboard in the docs (docs/images/orleans-dashboard.png) with headless chromium:
#   1. starts `metastone serve` (embedded silo + shipped tiny model) with the dashboard on a free loopback port,
#   2. sends a few chat completions through the gateway so the grains have calls to show,
#   3. loads the dashboard in Debian's chromium (apt-get install -y chromium) and saves a screenshot, then stops the server.
# Not run by test.sh (it lives below tests/tools/, not in it): run it by hand after a change to the dashboard or the cluster.
#
# Usage: tests/tools/screenshots/dashboard.sh [output.png]      (default docs/images/orleans-dashboard.png)
# Env:   METASTONE_CLI   command that runs the CLI (default: ./metastone.sh, which builds it when sources changed)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
out="${1:-$root/docs/images/orleans-dashboard.png}"
cli="${METASTONE_CLI:-$root/metastone.sh}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$browser" ]] || { echo "dashboard.sh: chromium not found; install it with: apt-get install -y chromium" >&2; exit 2; }

# A free port below the kernel's ephemeral range (32768+), where the CLI's own bind-to-0 picks (silo and gateway ports) never land.
free_port() {
  python3 -c '
import random, socket
for _ in range(200):
    port = random.randint(20000, 29999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError: pass
    finally: s.close()'
}
http_port="$(free_port)"
dashboard_port="$(free_port)"
log="$(mktemp)"
profile="$(mktemp -d)"

$cli serve --urls "http://127.0.0.1:$http_port" --dashboard-port "$dashboard_port" >"$log" 2>&1 &
server=$!
cleanup() {
  # SIGTERM: a background job of a non-interactive shell ignores SIGINT. serve stops its gateway and silo on it.
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$profile" "$log"
}
trap cleanup EXIT

# Ready line: "metastone serve ready: …" (the model is loaded and the silo joined). Bounded wait: 5 minutes (a build may run first).
for _ in $(seq 1 300); do
  grep -q "metastone serve ready" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "dashboard.sh: metastone serve exited" >&2; exit 1; }
  sleep 1
done
grep -q "metastone serve ready" "$log" || { cat "$log" >&2; echo "dashboard.sh: metastone serve not ready after 5 minutes" >&2; exit 1; }

# Some traffic for the grain statistics: three jobs of each effort.
for effort in low medium high low medium high low medium high; do
  curl -sf --max-time 120 "http://127.0.0.1:$http_port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"metastone-tiny\", \"reasoning_effort\": \"$effort\", \"messages\": [{\"role\": \"user\", \"content\": \"Reach 81 with 5, 16, 13 using + - * /, each number at most once.\"}]}" >/dev/null
done
sleep 3 # the dashboard samples its counters every second

mkdir -p "$(dirname "$out")"
# --virtual-time-budget lets the page's scripts fetch and draw before the shot; the profile directory keeps nothing behind.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size=1440,1100 --virtual-time-budget=10000 --screenshot="$out" "http://127.0.0.1:$dashboard_port/" 2>/dev/null
[[ -s "$out" ]] || { echo "dashboard.sh: no screenshot written to $out" >&2; exit 1; }
echo "$out"
