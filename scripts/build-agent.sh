#!/usr/bin/env bash
# Builds the browser agent for pages: cargo (size-first `release-wasm` profile: opt-level z, LTO,
# panic=abort), wasm-bindgen (the JS glue), then wasm-opt -Oz from npm's binaryen and esbuild.
#
#   scripts/build-agent.sh [OUT_DIR]     # wasm-bindgen's output, default target/agent/pkg; the page's
#                                        # files go to target/agent/dist (DIST_DIR)
#
# Prints the sizes: raw, gzip -9 and brotli -q 11 of the wasm, the JS glue and both together.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/agent/pkg}"
wasm_opt="$root/.pulse/tools/node_modules/.bin/wasm-opt"
wasm_dis="$root/.pulse/tools/node_modules/.bin/wasm-dis"
esbuild="$root/.pulse/tools/node_modules/.bin/esbuild"
wasm_bindgen="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen"
[ -x "$wasm_opt" ] && [ -x "$esbuild" ] && [ -x "$wasm_bindgen" ] || PULSE_SETUP_QUIET=1 "$root/scripts/setup.sh" run

cd "$root"
cargo build --quiet --lib -p pulse-agent --target wasm32-unknown-unknown --profile release-wasm --no-default-features
rm -rf "$out" && mkdir -p "$out"
"$wasm_bindgen" --target web --out-dir "$out" --out-name pulse \
  "${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/release-wasm/pulse_agent.wasm"
# wasm-bindgen names each import after its function plus a 16-digit hash (`__wbg_num_486d…`), in
# the wasm and again in the glue: ~1.2 KB of digits that do not compress (~0.7 KB brotli). The
# agent's imports are unique by function name, so the hashes go, in both files alike (checked).
"$wasm_dis" "$out/pulse_bg.wasm" -o "$out/pulse_bg.wat"
sed -E -i 's/"(__wbg_[A-Za-z0-9_]*)_[0-9a-f]{16}"/"\1"/g' "$out/pulse_bg.wat"
dups="$(grep -oE '\(import "[^"]*" "[^"]*"' "$out/pulse_bg.wat" | sort | uniq -d)"
[ -z "$dups" ] || { echo "build-agent: import names clash without their hashes: $dups" >&2; exit 1; }
sed -E -i 's/(__wbg_[A-Za-z0-9_]*)_[0-9a-f]{16}\b/\1/g' "$out/pulse.js"
# The features the Rust target emits (wasm-opt must be told; it defaults to MVP).
"$wasm_opt" -Oz --strip-debug --strip-producers \
  --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int \
  --enable-reference-types --enable-multivalue \
  "$out/pulse_bg.wat" -o "$out/pulse_bg.wasm"
rm "$out/pulse_bg.wat"
# Every import the glue provides is one the wasm asks for, and the other way round.
wasm_imports="$("$wasm_dis" "$out/pulse_bg.wasm" | { grep -oE '\(import "\./pulse_bg\.js" "[^"]*"' || true; } | sed -E 's/.* "([^"]*)"$/\1/' | sort)"
[ -n "$wasm_imports" ] || { echo "build-agent: found no glue imports in the wasm (has wasm-bindgen's output changed?)" >&2; exit 1; }
glue_imports="$(grep -oE '(__wbg_[A-Za-z0-9_]*|__wbindgen_[A-Za-z0-9_]*): *function' "$out/pulse.js" | sed -E 's/:.*//' | sort)"
[ "$wasm_imports" = "$glue_imports" ] || { echo "build-agent: the glue's imports and the wasm's differ after renaming" >&2; diff <(echo "$wasm_imports") <(echo "$glue_imports") >&2; exit 1; }
# The distributable (served by the collector at /agent/, and the npm package's files): one ES
# module, `pulse.js` — the entry (crates/agent/js/pulse.js, whose `init` loads the wasm once and
# starts the agent), wasm-bindgen's glue and the host binding, bundled and minified by esbuild
# (glue the entry does not use, such as `initSync`, is left out; one file compresses better than
# three and loads without an import waterfall) — and the wasm under a content-hashed name, cached
# forever. `new URL('….wasm', import.meta.url)` stays intact for bundlers.
dist="${DIST_DIR:-$root/target/agent/dist}"
rm -rf "$dist" && mkdir -p "$dist"
wasm_hash="$(sha256sum "$out/pulse_bg.wasm" | cut -c1-10)"
cp "$out/pulse_bg.wasm" "$dist/pulse_bg.$wasm_hash.wasm"
sed "s/pulse_bg\.wasm/pulse_bg.$wasm_hash.wasm/g" "$out/pulse.js" >"$out/pulse_glue.js"
grep -q "pulse_bg.$wasm_hash.wasm" "$out/pulse_glue.js" || { echo "build-agent: the glue does not name pulse_bg.wasm" >&2; exit 1; }
cp "$root/crates/agent/js/pulse.js" "$out/entry.js"
# wasm-bindgen repeats the host module's key in the glue's import object; harmless, so not reported.
"$esbuild" "$out/entry.js" --bundle --minify --format=esm --log-level=warning \
  --log-override:duplicate-object-key=silent --outfile="$dist/pulse.js"
grep -q "pulse_bg.$wasm_hash.wasm" "$dist/pulse.js" || { echo "build-agent: the bundle does not load the wasm" >&2; exit 1; }
# Types: the entry's, and the glue's they refer to (`./pulse_glue.js`; a .d.ts without a .js).
cp "$root/crates/agent/js/pulse.d.ts" "$dist/pulse.d.ts"
cp "$out/pulse.d.ts" "$dist/pulse_glue.d.ts"

size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9c "$1" | wc -c | tr -d ' '; }
br() { brotli -q 11 -c "$1" | wc -c | tr -d ' '; }
wasm="$dist/pulse_bg.$wasm_hash.wasm"
printf 'agent: %-22s %8s %8s %8s\n' "" raw gzip brotli
printf 'agent: %-22s %8s %8s %8s\n' "pulse_bg.wasm" "$(size "$wasm")" "$(gz "$wasm")" "$(br "$wasm")"
printf 'agent: %-22s %8s %8s %8s\n' "pulse.js" "$(size "$dist/pulse.js")" "$(gz "$dist/pulse.js")" "$(br "$dist/pulse.js")"
printf 'agent: %-22s %8s %8s %8s\n' "both (each on its own)" \
  "$(( $(size "$wasm") + $(size "$dist/pulse.js") ))" "$(( $(gz "$wasm") + $(gz "$dist/pulse.js") ))" "$(( $(br "$wasm") + $(br "$dist/pulse.js") ))"
