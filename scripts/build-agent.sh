#!/usr/bin/env bash
# Builds the browser agent for pages: wasm-pack (size-first `release-wasm` profile: opt-level z,
# LTO, panic=abort), then wasm-opt -Oz from npm's binaryen (wasm-pack's own would be downloaded).
#
#   scripts/build-agent.sh [OUT_DIR]     # default target/agent/pkg: pulse.js, pulse_bg.wasm, pulse.d.ts
#
# Prints the sizes: raw, gzip -9 and brotli -q 11 of the wasm, the JS glue and both together.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/agent/pkg}"
wasm_opt="$root/.pulse/tools/node_modules/.bin/wasm-opt"
[ -x "$wasm_opt" ] || "$root/scripts/setup.sh"

cd "$root"
wasm-pack --quiet build crates/agent --target web --profile release-wasm --no-opt \
  --out-dir "$out" --out-name pulse --no-pack 2>&1 | grep -v '^\[INFO\]' || true
[ -f "$out/pulse_bg.wasm" ] || { echo "build-agent: wasm-pack produced no $out/pulse_bg.wasm" >&2; exit 1; }
# The features the Rust target emits (wasm-opt must be told; it defaults to MVP).
"$wasm_opt" -Oz --strip-debug --strip-producers \
  --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int \
  --enable-reference-types --enable-multivalue \
  "$out/pulse_bg.wasm" -o "$out/pulse_bg.wasm"
rm -f "$out/.gitignore"

size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9c "$@" | wc -c | tr -d ' '; }
br() { cat "$@" | brotli -q 11 -c | wc -c | tr -d ' '; }
printf 'agent: %-22s %8s %8s %8s\n' "" raw gzip brotli
printf 'agent: %-22s %8s %8s %8s\n' pulse_bg.wasm "$(size "$out/pulse_bg.wasm")" "$(gz "$out/pulse_bg.wasm")" "$(br "$out/pulse_bg.wasm")"
printf 'agent: %-22s %8s %8s %8s\n' pulse.js "$(size "$out/pulse.js")" "$(gz "$out/pulse.js")" "$(br "$out/pulse.js")"
printf 'agent: %-22s %8s %8s %8s\n' "wasm + js (separately)" \
  "$(( $(size "$out/pulse_bg.wasm") + $(size "$out/pulse.js") ))" \
  "$(( $(gz "$out/pulse_bg.wasm") + $(gz "$out/pulse.js") ))" \
  "$(( $(br "$out/pulse_bg.wasm") + $(br "$out/pulse.js") ))"
