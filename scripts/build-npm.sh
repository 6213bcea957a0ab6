#!/usr/bin/env bash
# Packs the npm package from the built agent and builds the Vite example app from that tarball,
# as a user would install it.
#
#   scripts/build-npm.sh     # → target/npm/pulse-rum-agent-<version>.tgz, tests/vite-app/dist/
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="$root/target/agent/dist"
[ -f "$dist/pulse.js" ] || "$root/scripts/build-agent.sh" >/dev/null

rm -rf "$root/npm/dist" && mkdir -p "$root/npm/dist" "$root/target/npm"
cp "$dist"/*.js "$dist"/*.d.ts "$dist"/*.wasm "$root/npm/dist/"
cd "$root/npm"
tarball="$(npm pack --silent --pack-destination "$root/target/npm" 2>/dev/null | tail -1)"
echo "npm: packed target/npm/$tarball:"
tar -tzf "$root/target/npm/$tarball" | sed 's/^/npm:   /'

app="$root/tests/vite-app"
cd "$app"
# The tarball, not a link: exactly what `npm install @pulse-rum/agent` would put in node_modules.
npm install --no-audit --no-fund --no-package-lock --silent "$root/target/npm/$tarball" >/dev/null
npm install --no-audit --no-fund --no-package-lock --silent >/dev/null
npx --no-install vite build --logLevel warn
echo "npm: built tests/vite-app/dist with the packed package"
