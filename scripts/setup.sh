#!/usr/bin/env bash
# Installs what Pulse needs and is missing; safe to run again (every step checks first and is
# skipped, silently, when its tool is already there).
#
#   scripts/setup.sh run     # what `make run` needs: ClickHouse, the wasm target, wasm-opt and
#                            # esbuild (the agent build), brotli (its size report)
#   scripts/setup.sh check   # the above, plus clippy and rustfmt (`make check`)
#   scripts/setup.sh test    # the above, plus Chromium + chromedriver, Firefox + geckodriver and
#                            # wasm-bindgen-test-runner (`make test`, `make bench`)
#
# Each step that runs says what it installs and roughly how long it takes, then how long it took.
set -euo pipefail

profile=${1:-test}
case "$profile" in run | check | test) ;; *) echo "usage: setup.sh run|check|test" >&2; exit 2 ;; esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
tools="$root/.pulse/tools"

say() { printf 'setup: %s\n' "$*"; }

# step "what" "about how long" command…: runs one install with a progress line before and after.
step() {
  local what=$1 eta=$2 started
  shift 2
  started=$(date +%s)
  say "$what (about $eta) …"
  "$@"
  say "$what: done in $(($(date +%s) - started)) s"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; exit 1
  fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v cargo >/dev/null; then
  say "cargo is missing: install Rust with rustup (https://rustup.rs) first"; exit 1
fi

# --- what running needs ------------------------------------------------------------------------
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v brotli >/dev/null || missing+=(brotli)
command -v clickhouse-server >/dev/null && command -v clickhouse-client >/dev/null ||
  missing+=(clickhouse-server clickhouse-client)
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: ${missing[*]}" "30 s" apt_install "${missing[@]}"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  step "rustup target wasm32-unknown-unknown" "20 s" rustup target add wasm32-unknown-unknown
fi

# npm's binaryen (wasm-opt; Debian's is too old for today's wasm features) and esbuild (bundles and
# minifies the agent's JS). Started in the background: it only waits on the network, the next step on the CPU.
npm_pid=
if [ ! -x "$tools/node_modules/.bin/wasm-opt" ] || [ ! -x "$tools/node_modules/.bin/esbuild" ]; then
  mkdir -p "$tools"
  say "npm: binaryen (wasm-opt) and esbuild into .pulse/tools (about 20 s, in the background) …"
  npm install --prefix "$tools" --no-audit --no-fund --silent binaryen@132 esbuild@0.25.12 \
    >"$tools/npm-install.log" 2>&1 &
  npm_pid=$!
fi

if [ -n "$npm_pid" ]; then
  if ! wait "$npm_pid"; then
    cat "$tools/npm-install.log" >&2
    say "npm install of binaryen and esbuild failed"; exit 1
  fi
  say "npm: binaryen and esbuild: done"
fi

# --- what checking and testing need ----------------------------------------------------------------
if [ "$profile" != run ]; then
  for component in clippy rustfmt; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
      step "rustup component ${component}" "15 s" rustup component add "${component}"
    fi
  done
fi
if [ "$profile" = test ]; then
  # `wasm-bindgen-test-runner` (from the wasm-bindgen CLI of exactly the version in Cargo.lock, as
  # the test build's glue must match the crate) runs the agent's browser tests. The page's build
  # needs no wasm-bindgen.
  bindgen_version="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print; exit}' "$root/Cargo.lock")"
  install_bindgen() {
    # --locked first; its lockfile has named a crate version the registry mirror lacked, then a
    # fresh resolution within the same semver ranges works.
    cargo install wasm-bindgen-cli --version "$bindgen_version" --locked --force --quiet 2>/dev/null ||
      cargo install wasm-bindgen-cli --version "$bindgen_version" --force --quiet
  }
  if ! "$cargo_bin/wasm-bindgen" --version 2>/dev/null | grep -q " $bindgen_version\b"; then
    step "cargo install wasm-bindgen-cli $bindgen_version" "2 minutes" install_bindgen
  fi
  browsers=()
  command -v chromium >/dev/null && command -v chromedriver >/dev/null || browsers+=(chromium chromium-driver)
  command -v firefox >/dev/null || command -v firefox-esr >/dev/null || browsers+=(firefox-esr)
  if [ ${#browsers[@]} -gt 0 ]; then
    step "apt: ${browsers[*]}" "1 minute" apt_install "${browsers[@]}"
  fi
  # faketime runs a collector with its wall clock shifted (a fleet whose clocks differ).
  if ! command -v faketime >/dev/null; then
    step "apt: faketime" "15 s" apt_install faketime
  fi
  if ! command -v geckodriver >/dev/null && [ ! -x "$cargo_bin/geckodriver" ]; then
    step "cargo install geckodriver (Firefox's WebDriver server)" "90 s" cargo install geckodriver --locked --quiet
  fi
  # chDB (a modern ClickHouse engine from PyPI) runs the collector's SQL in `tests/chdb.rs`.
  chdb_env="$root/.pulse/chdb"
  if ! "$chdb_env/bin/python" -c 'import chdb' 2>/dev/null; then
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -m venv "$chdb_env" 2>/dev/null; then
      apt_install python3-venv
      rm -rf "$chdb_env"
      python3 -m venv "$chdb_env"
    fi
    step "pip: chdb into .pulse/chdb (a modern ClickHouse engine for the SQL check)" "20 s" "$chdb_env/bin/python" -m pip install -q chdb
  fi
fi

if [ -z "${PULSE_SETUP_QUIET:-}" ]; then
  say "ok ($profile: $(dpkg-query -W -f='clickhouse ${Version}' clickhouse-server 2>/dev/null || echo clickhouse), $(cargo --version | cut -d' ' -f1-2))"
fi
