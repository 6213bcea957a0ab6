#!/usr/bin/env bash
# Builds the browser agent for pages: cargo (size-first `release-wasm` profile: opt-level z, LTO,
# panic=abort; no wasm-bindgen: the wasm imports js/host.js directly), then wasm-opt -Os from
# npm's binaryen and esbuild.
#
#   scripts/build-agent.sh [OUT_DIR]     # intermediate files, default target/agent/pkg; the page's
#                                        # files go to target/agent/dist (DIST_DIR)
#
# Prints the sizes: raw, gzip -9 and brotli -q 11 of the wasm, the JS (entry and binding) and both together.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/agent/pkg}"
wasm_opt="$root/.pulse/tools/node_modules/.bin/wasm-opt"
wasm_dis="$root/.pulse/tools/node_modules/.bin/wasm-dis"
esbuild="$root/.pulse/tools/node_modules/.bin/esbuild"
[ -x "$wasm_opt" ] && [ -x "$esbuild" ] || PULSE_SETUP_QUIET=1 "$root/scripts/setup.sh" run

cd "$root"
cargo build --quiet --lib -p pulse-agent --target wasm32-unknown-unknown --profile release-wasm --no-default-features
rm -rf "$out" && mkdir -p "$out"
built="${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/release-wasm/pulse_agent.wasm"
# The features the Rust target emits (wasm-opt must be told; it defaults to MVP). Memory below
# 1 KiB is the far end of the 1 MiB stack, which the agent never gets near: wasm-opt may fold
# offsets into addresses (--low-memory-unused). (The stack stays first, below the data: overflowing
# it traps instead of writing over the data; data first would save ~50 B.) The features section is for linkers only, and the
# linker's __data_end/__heap_base exports for tools that grow the heap themselves (talc does not;
# nothing in host.js or pulse.js reads them). -Os, not -Oz, and functions of one caller inlined
# only up to 100 B (-ocimfs; -Os inlines them whatever their size): larger raw, but smaller under
# brotli (about 0.1 KB each; from 50 to 120 B all measured smaller than no limit).
"$wasm_opt" --remove-exports "--pass-arg=remove-exports@__*" -Os -ocimfs=100 --converge --low-memory-unused --strip-debug --strip-producers --strip-target-features \
  --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int \
  --enable-reference-types --enable-multivalue \
  "$built" -o "$out/pulse_bg.wasm"
# Every function the wasm imports is one of `js/host.js`'s import object (`export const host`).
imports="$("$wasm_dis" "$out/pulse_bg.wasm" | { grep -oE '\(import "h" "[^"]*"' || true; } | sed -E 's/.* "([^"]*)"$/\1/' | sort)"
[ -n "$imports" ] || { echo "build-agent: the wasm imports nothing from host.js (module h)" >&2; exit 1; }
others="$("$wasm_dis" "$out/pulse_bg.wasm" | grep -oE '\(import "[^"]*"' | grep -v '"h"' || true)"
[ -z "$others" ] || { echo "build-agent: the wasm imports from modules other than host.js: $others" >&2; exit 1; }
exported="$(sed -n '/^export const host = {/,/^};/p' crates/agent/js/host.js | grep -oE '^  [A-Za-z_]+[(:,]' | tr -d ' (:,' | sort)"
missing="$(comm -23 <(echo "$imports") <(echo "$exported"))"
[ -z "$missing" ] || { echo "build-agent: host.js lacks what the wasm imports: $missing" >&2; exit 1; }
# The distributable (served by the collector at /agent/, and the npm package's files): one ES
# module, `pulse.js` — the entry (crates/agent/js/pulse.js, whose `init` loads the wasm once and
# starts the agent) and the host binding, bundled and minified by esbuild — and the wasm under a
# content-hashed name, cached forever. `new URL('….wasm', import.meta.url)` stays intact for
# bundlers.
dist="${DIST_DIR:-$root/target/agent/dist}"
rm -rf "$dist" && mkdir -p "$dist"
wasm_hash="$(sha256sum "$out/pulse_bg.wasm" | cut -c1-10)"
cp "$out/pulse_bg.wasm" "$dist/pulse_bg.$wasm_hash.wasm"
cp crates/agent/js/host.js "$out/host.js"
sed "s/pulse_bg\.wasm/pulse_bg.$wasm_hash.wasm/g" crates/agent/js/pulse.js >"$out/entry.js"
"$esbuild" "$out/entry.js" --bundle --minify --format=esm --log-level=warning --outfile="$dist/pulse.js"
grep -q "pulse_bg.$wasm_hash.wasm" "$dist/pulse.js" || { echo "build-agent: the bundle does not load the wasm" >&2; exit 1; }
cp crates/agent/js/pulse.d.ts "$dist/pulse.d.ts"

size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9c "$1" | wc -c | tr -d ' '; }
br() { brotli -q 11 -c "$1" | wc -c | tr -d ' '; }
wasm="$dist/pulse_bg.$wasm_hash.wasm"
printf 'agent: %-22s %8s %8s %8s\n' "" raw gzip brotli
printf 'agent: %-22s %8s %8s %8s\n' "pulse_bg.wasm" "$(size "$wasm")" "$(gz "$wasm")" "$(br "$wasm")"
printf 'agent: %-22s %8s %8s %8s\n' "pulse.js" "$(size "$dist/pulse.js")" "$(gz "$dist/pulse.js")" "$(br "$dist/pulse.js")"
printf 'agent: %-22s %8s %8s %8s\n' "both (each on its own)" \
  "$(( $(size "$wasm") + $(size "$dist/pulse.js") ))" "$(( $(gz "$wasm") + $(gz "$dist/pulse.js") ))" "$(( $(br "$wasm") + $(br "$dist/pulse.js") ))"
