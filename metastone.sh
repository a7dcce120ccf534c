#!/usr/bin/env bash
# Runs the metastone CLI from a checkout: ./metastone.sh ask "..."   (or ./metastone.sh doctor)
#   - prepares the host with deploy/setup-host.sh once (again whenever that script changes),
#   - builds src/MetaStone.Cli in Release into artifacts/cli when any source is newer than the build,
#   - runs it with all arguments passed through; the exit code is the CLI's.
# Build and setup chatter goes to stderr so `./metastone.sh doctor --json | jq` stays clean.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
cd "$root"
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1

out="$root/artifacts/cli"
dll="$out/metastone.dll"
setup_stamp="$root/artifacts/.setup-host.sha256"
mkdir -p "$root/artifacts"

setup_hash="$(sha256sum deploy/setup-host.sh | cut -d' ' -f1)"
if [ "$(cat "$setup_stamp" 2>/dev/null || true)" != "$setup_hash" ]; then
  if deploy/setup-host.sh >&2; then
    printf '%s\n' "$setup_hash" > "$setup_stamp"
  else
    # Keep going: `metastone doctor` explains what is missing better than the setup script can.
    echo "[metastone] deploy/setup-host.sh failed; continuing (run './metastone.sh doctor' for exact fixes)" >&2
  fi
fi

if [ ! -f "$dll" ] || [ -n "$(find src Directory.Build.props Directory.Packages.props -newer "$dll" \
      \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.json' \) -not -path '*/bin/*' -not -path '*/obj/*' -print -quit)" ]; then
  echo "[metastone] building src/MetaStone.Cli (Release) -> artifacts/cli" >&2
  log="$root/artifacts/cli-build.log"
  if ! dotnet build src/MetaStone.Cli/MetaStone.Cli.csproj -c Release -o "$out" -nologo >"$log" 2>&1; then
    grep -E ': error ' "$log" | sort -u >&2 || tail -40 "$log" >&2
    echo "[metastone] build failed; full log: $log" >&2
    exit 1
  fi
  touch "$dll"
fi

exec dotnet "$dll" "$@"
