#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine: system packages, TimescaleDB built from
# Debian's source package, and the project's virtualenv. A second run only checks.
#   bash scripts/setup.sh            what `make run` needs
#   bash scripts/setup.sh --test     and the test-only tools (`make test`): Chromium for the
#                                    browser tests, firebase-tools for the Auth emulator
set -euo pipefail

with_test_tools=""
case "${1:-}" in
  "") ;;
  --test) with_test_tools=yes ;;
  *) printf '[setup] error: unknown option %s (the only one is --test)\n' "$1"; exit 2 ;;
esac

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
step() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    step "error: '$*' needs root; run as root or install sudo"; exit 1
  fi
}

# --- 1. Debian packages ----------------------------------------------------------------
packages=(
  mosquitto mosquitto-clients
  postgresql-15 postgresql-client-15 postgresql-server-dev-15
  cmake build-essential dpkg-dev libssl-dev
)
[ -n "$with_test_tools" ] && packages+=(chromium)
missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
apt_updated=""
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  apt_updated=yes
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  step "Debian packages: all ${#packages[@]} present"
fi
# The Debian package starts system services; the project runs its own instances.
for service in mosquitto postgresql; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    step "note: a system $service service is running; fleetpulse uses its own ports and ignores it"
  fi
done

# --- 2. TimescaleDB (Apache-2 edition) from Debian's source package --------------------
pg_config=/usr/lib/postgresql/15/bin/pg_config
extension_dir=$("$pg_config" --sharedir)/extension
if [ -f "$extension_dir/timescaledb.control" ]; then
  step "TimescaleDB: installed ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$extension_dir/timescaledb.control"))"
else
  sources_file=/etc/apt/sources.list.d/fleetpulse-trixie-src.sources
  if [ ! -f "$sources_file" ]; then
    # Reuse the mirror this machine already uses for Debian, so no host is hard-coded here.
    mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
      | grep -v security | head -n 1)
    if [ -z "$mirror" ]; then
      mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    [ -n "$mirror" ] || { step "error: cannot find this machine's Debian mirror in /etc/apt"; exit 1; }
    step "adding a Debian 13 (trixie) deb-src line for the timescaledb source package: $sources_file"
    as_root tee "$sources_file" >/dev/null <<SOURCES
# Added by fleetpulse scripts/setup.sh: source packages only, no trixie binaries.
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    apt_updated=""
  fi
  if [ -z "$apt_updated" ]; then
    step "apt-get update (to see the trixie source index)"
    as_root apt-get update -q
  fi
  build_root=$(mktemp -d /tmp/fleetpulse-timescaledb.XXXXXX)
  trap 'rm -rf "$build_root"' EXIT
  step "fetching the timescaledb source package into $build_root"
  (cd "$build_root" && apt-get source -q timescaledb >"$build_root/source.log" 2>&1) || {
    cat "$build_root/source.log"; step "error: apt-get source timescaledb failed"; exit 1; }
  src=$(find "$build_root" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -n 1)
  step "building TimescaleDB (Apache-2 edition) from $(basename "$src") against PostgreSQL 15 ..."
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPG_CONFIG="$pg_config" \
    -DAPACHE_ONLY=ON -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF >"$build_root/cmake.log" 2>&1 || {
    tail -n 40 "$build_root/cmake.log"; step "error: cmake failed"; exit 1; }
  make -C "$src/build" -j"$(nproc)" >"$build_root/make.log" 2>&1 || {
    tail -n 40 "$build_root/make.log"; step "error: the TimescaleDB build failed"; exit 1; }
  as_root make -C "$src/build" install >"$build_root/install.log" 2>&1 || {
    tail -n 20 "$build_root/install.log"; step "error: installing TimescaleDB failed"; exit 1; }
  step "TimescaleDB installed into $extension_dir"
fi

# --- 3. The virtualenv ----------------------------------------------------------------
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "creating the virtualenv .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.fleetpulse-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "installing fleetpulse and its dependencies into .venv (editable) ..."
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
else
  step "virtualenv: up to date"
fi
if [ -z "$with_test_tools" ]; then
  step "done (the test-only tools, Chromium and firebase-tools, come with \`make test\`)"
  exit 0
fi
# --- 4. firebase-tools, for the Firebase Auth emulator end-to-end test -----------------
# Project-local (.var/node, ignored). The Auth emulator is plain Node: no Java needed.
firebase_cli=.var/node/node_modules/.bin/firebase
install_firebase_tools() {
  rm -rf .var/node
  mkdir -p .var/node
  npm install --prefix .var/node --no-audit --no-fund --loglevel=error 'firebase-tools@15'
}
# An install that npm reported as done can still lack files (seen once: a package without
# its index.js); a CLI that cannot print its version is installed again, from a verified cache.
if [ -x "$firebase_cli" ] && firebase_version=$("$firebase_cli" --version 2>/dev/null); then
  step "firebase-tools: present ($firebase_version)"
elif command -v npm >/dev/null; then
  [ -e "$firebase_cli" ] && step "firebase-tools in .var/node does not start; installing it again"
  step "installing firebase-tools 15 into .var/node (for the Firebase Auth emulator test) ..."
  install_firebase_tools || { step "error: npm install firebase-tools failed"; exit 1; }
  if ! firebase_version=$("$firebase_cli" --version 2>/dev/null); then
    step "firebase-tools does not start after npm install; verifying npm's cache and retrying"
    npm cache verify >/dev/null
    install_firebase_tools || { step "error: npm install firebase-tools failed"; exit 1; }
    firebase_version=$("$firebase_cli" --version 2>/dev/null) || {
      step "error: firebase-tools in .var/node does not start: $("$firebase_cli" --version 2>&1 | tail -3)"
      exit 1; }
  fi
  step "firebase-tools: installed ($firebase_version)"
else
  step "note: node/npm are not installed; the Firebase Auth emulator test will be skipped"
fi
step "done"
