#!/usr/bin/env bash
# Makes a fresh Debian 12/13 or Ubuntu 24.04 machine ready to build, test and run MetaStone.Cluster.
# Idempotent: every step checks first and does nothing when already satisfied.
#   - .NET SDK 10 must already be on PATH (we only check it: installing an SDK is the user's choice).
#   - redis-server (tests start their own on loopback; clusters use it for membership and jobs).
#   - libstdc++ with GLIBCXX_3.4.32 (GCC 13+), needed by TorchSharp 0.107's native libLibTorchSharp.so.
#     Debian 12 ships GCC 12's; there we install libstdc++6 from Debian 13 (trixie), pinned low so that
#     nothing else is pulled from trixie by later upgrades.
#   - node + npm (tokenizer parity tests run the reference JavaScript tokenizer).
#   - a TrueType font (fonts-dejavu-core) for the labels of the sweep plots.
#   - Docker Compose v2 when apt has it (optional; the tests validate the compose files with it).
set -euo pipefail

say() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    $SUDO apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
}

# --- .NET SDK ---------------------------------------------------------------
if ! command -v dotnet >/dev/null 2>&1; then
  say "ERROR: the .NET 10 SDK is not on PATH. Install it (https://learn.microsoft.com/dotnet/core/install/linux) and re-run."
  exit 1
fi
if ! dotnet --list-sdks | grep -q '^10\.'; then
  say "ERROR: a .NET 10 SDK is required; found: $(dotnet --list-sdks | tr '\n' ' ')"
  exit 1
fi
say ".NET SDK ok ($(dotnet --version))"

# --- libstdc++ GLIBCXX_3.4.32 -----------------------------------------------
libstdcxx_path() { ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}'; }
has_glibcxx_3_4_32() {
  local p; p="$(libstdcxx_path)"
  [ -n "$p" ] && grep -qa 'GLIBCXX_3\.4\.32' "$p"
}
if has_glibcxx_3_4_32; then
  say "libstdc++ provides GLIBCXX_3.4.32 ok"
else
  . /etc/os-release
  if [ "${ID:-}" = "debian" ] && [ "${VERSION_ID:-}" = "12" ]; then
    say "Debian 12: installing libstdc++6 from Debian 13 (trixie), pinned at priority 100"
    if ! grep -rqs 'trixie' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
      mirror="$( (grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | grep -v security | head -1 | tr -d ' ')"
      [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
      printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "${mirror%/}" \
        | $SUDO tee /etc/apt/sources.list.d/metastone-trixie.sources >/dev/null
      printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' | $SUDO tee /etc/apt/preferences.d/metastone-trixie >/dev/null
    fi
    APT_UPDATED=0; apt_update_once
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t trixie libstdc++6 >/dev/null
    $SUDO ldconfig
    if has_glibcxx_3_4_32; then say "libstdc++ now provides GLIBCXX_3.4.32"; else say "ERROR: libstdc++ upgrade did not provide GLIBCXX_3.4.32"; exit 1; fi
  else
    say "ERROR: libstdc++ lacks GLIBCXX_3.4.32 (needs GCC 13's runtime). On ${PRETTY_NAME:-this system} install a libstdc++6 from GCC >= 13"
    say "       (Ubuntu 24.04 and Debian 13 have it out of the box). Run 'metastone doctor' for details."
    exit 1
  fi
fi

# --- redis-server -------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1; then
  say "redis-server ok ($(redis-server --version | awk '{print $3}'))"
else
  apt_update_once
  say "installing redis-server"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # We start our own instances on loopback ports; the distro's service is not needed.
  ($SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true)
fi

# --- node + npm ---------------------------------------------------------------
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  say "node ok ($(node --version))"
else
  apt_update_once
  say "installing nodejs + npm"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

# --- a TrueType font for the sweep plots ----------------------------------------
# ScottPlot draws text with SkiaSharp's fontconfig-free build, which reads font files itself; with none, the
# PNGs come out without labels.
if find /usr/share/fonts /usr/local/share/fonts -name '*.ttf' -print -quit 2>/dev/null | grep -q .; then
  say "fonts ok"
else
  apt_update_once
  say "installing fonts-dejavu-core (labels of the sweep plots)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null
fi

# --- Docker Compose v2 (tests only: `docker compose config -q` checks the compose files; no engine needed) --------
compose_v2() { { docker compose version 2>/dev/null || docker-compose version 2>/dev/null; } | grep -qE 'version v?2\.'; }
if compose_v2; then
  say "docker compose v2 ok"
elif grep -rqs 'trixie' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || { . /etc/os-release; [ "${VERSION_ID:-}" != "12" ]; }; then
  apt_update_once
  say "installing docker-compose v2 (compose file checks in the tests)"
  release=""; grep -rqs 'trixie' /etc/apt/sources.list.d/metastone-trixie.sources 2>/dev/null && release="-t trixie"
  # Optional: without it the compose check is reported as skipped, nothing else changes.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $release docker-compose >/dev/null 2>&1 \
    || say "docker-compose v2 not installable here: the compose config test will be skipped"
fi

say "ready"
