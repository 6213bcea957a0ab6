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
say "ok ($(clickhouse-server --help >/dev/null 2>&1; dpkg-query -W -f='clickhouse ${Version}' clickhouse-server 2>/dev/null || echo clickhouse), $(cargo --version))"
