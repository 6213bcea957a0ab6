#!/usr/bin/env bash
# Installs what Pulse needs and is missing; safe to run again (every step checks first).
#
#   scripts/setup.sh           # what `make run` and `make test` need: ClickHouse, curl, Rust tools
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; exit 1
  fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v curl >/dev/null || apt_install curl
if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
  apt_install clickhouse-server clickhouse-client
fi

if ! command -v cargo >/dev/null; then
  say "cargo is missing: install Rust with rustup (https://rustup.rs) first"; exit 1
fi
for component in clippy rustfmt; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    say "adding rustup component ${component}"
    rustup component add "${component}"
  fi
done
# The wasm agent: target, wasm-pack, the wasm-bindgen CLI matching Cargo.lock, and a current wasm-opt
# (Debian's binaryen is too old for today's wasm features; npm's `binaryen` is current).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding rustup target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v wasm-pack >/dev/null && [ ! -x "$cargo_bin/wasm-pack" ]; then
  say "cargo install wasm-pack (about 2 minutes)"
  cargo install wasm-pack --locked --quiet
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
bindgen_version="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print; exit}' "$root/Cargo.lock")"
if [ -n "$bindgen_version" ] && ! "$cargo_bin/wasm-bindgen" --version 2>/dev/null | grep -q " $bindgen_version\b"; then
  say "cargo install wasm-bindgen-cli $bindgen_version (about 2 minutes)"
  # --locked first; its lockfile has named a crate version the registry mirror lacked, then a
  # fresh resolution within the same semver ranges works.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --locked --force --quiet ||
    cargo install wasm-bindgen-cli --version "$bindgen_version" --force --quiet
fi
tools="$root/.pulse/tools"
if [ ! -x "$tools/node_modules/.bin/wasm-opt" ] || [ ! -x "$tools/node_modules/.bin/esbuild" ]; then
  say "npm install binaryen (wasm-opt) and esbuild (minifies the JS glue) into .pulse/tools"
  mkdir -p "$tools"
  npm install --prefix "$tools" --no-audit --no-fund --silent binaryen@132 esbuild@0.25.12 >/dev/null
fi

# Browsers for the wasm tests (Chromium and Firefox, headless) and their WebDriver servers.
command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt_install chromium chromium-driver
command -v firefox >/dev/null || command -v firefox-esr >/dev/null || apt_install firefox-esr
command -v brotli >/dev/null || apt_install brotli
if ! command -v geckodriver >/dev/null && [ ! -x "$cargo_bin/geckodriver" ]; then
  say "cargo install geckodriver (about 2 minutes)"
  cargo install geckodriver --locked --quiet
fi

say "ok ($(clickhouse-server --help >/dev/null 2>&1; dpkg-query -W -f='clickhouse ${Version}' clickhouse-server 2>/dev/null || echo clickhouse), $(cargo --version))"
