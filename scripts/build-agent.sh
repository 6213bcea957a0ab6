#!/usr/bin/env bash
# Builds the browser agent for pages: cargo (size-first `release-wasm` profile: opt-level z, LTO,
# panic=abort), wasm-bindgen (the JS glue), then wasm-opt -Oz from npm's binaryen and esbuild.
#
#   scripts/build-agent.sh [OUT_DIR]     # default target/agent/pkg: pulse.js, pulse_bg.wasm, pulse.d.ts
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
wasm_imports="$("$wasm_dis" "$out/pulse_bg.wasm" | grep -oE '\(import "\./pulse_bg\.js" "[^"]*"' | sed -E 's/.* "([^"]*)"$/\1/' | sort)"
glue_imports="$(grep -oE '(__wbg_[A-Za-z0-9_]*|__wbindgen_[A-Za-z0-9_]*): *function' "$out/pulse.js" | sed -E 's/:.*//' | sort)"
[ "$wasm_imports" = "$glue_imports" ] || { echo "build-agent: the glue's imports and the wasm's differ after renaming" >&2; diff <(echo "$wasm_imports") <(echo "$glue_imports") >&2; exit 1; }
# The glue and the shims, minified (comments and whitespace are a third of the glue's brotli size;
# the types live in the .d.ts). `new URL('….wasm', import.meta.url)` stays intact for bundlers.
minify() { "$esbuild" "$1" --minify --format=esm --log-level=warning --outfile="$1.min" && mv "$1.min" "$1"; }
minify "$out/pulse.js"
while IFS= read -r -d '' f; do minify "$f"; done < <(find "$out/snippets" -name '*.js' -print0 2>/dev/null)

# The distributable (served by the collector at /agent/, and the npm package's files): the glue
# and the wasm under content-hashed names, cached forever, behind a small `pulse.js` entry whose
# `init` loads the wasm once and starts the agent.
dist="${DIST_DIR:-$root/target/agent/dist}"
rm -rf "$dist" && mkdir -p "$dist"
wasm_hash="$(sha256sum "$out/pulse_bg.wasm" | cut -c1-10)"
cp "$out/pulse_bg.wasm" "$dist/pulse_bg.$wasm_hash.wasm"
sed "s/pulse_bg\.wasm/pulse_bg.$wasm_hash.wasm/g" "$out/pulse.js" >"$dist/glue.tmp.js"
glue_hash="$(sha256sum "$dist/glue.tmp.js" | cut -c1-10)"
mv "$dist/glue.tmp.js" "$dist/pulse.$glue_hash.js"
cp "$out/pulse.d.ts" "$dist/pulse.$glue_hash.d.ts"
# The agent's small JS shims (wasm-bindgen snippets), imported by the glue by relative path; their
# folder name carries a hash of the crate.
[ -d "$out/snippets" ] && cp -r "$out/snippets" "$dist/"
# The entry and its types are files of the agent crate (crates/agent/js) naming the glue
# `./pulse_glue.js`; here they are pointed at the hashed glue.
sed "s#\./pulse_glue\.js#./pulse.$glue_hash.js#g" "$root/crates/agent/js/pulse.js" >"$dist/pulse.js"
sed "s#\./pulse_glue\.js#./pulse.$glue_hash.js#g" "$root/crates/agent/js/pulse.d.ts" >"$dist/pulse.d.ts"
grep -q "pulse.$glue_hash.js" "$dist/pulse.js" || { echo "build-agent: the entry does not import ./pulse_glue.js" >&2; exit 1; }

size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9c "$@" | wc -c | tr -d ' '; }
br() { cat "$@" | brotli -q 11 -c | wc -c | tr -d ' '; }
printf 'agent: %-22s %8s %8s %8s\n' "" raw gzip brotli
printf 'agent: %-22s %8s %8s %8s\n' pulse_bg.wasm "$(size "$out/pulse_bg.wasm")" "$(gz "$out/pulse_bg.wasm")" "$(br "$out/pulse_bg.wasm")"
js_files=("$out/pulse.js")
while IFS= read -r -d '' f; do js_files+=("$f"); done < <(find "$out/snippets" -name '*.js' -print0 2>/dev/null)
printf 'agent: %-22s %8s %8s %8s\n' "pulse.js + snippets" "$(cat "${js_files[@]}" | wc -c | tr -d ' ')" "$(cat "${js_files[@]}" | gzip -9c | wc -c | tr -d ' ')" "$(cat "${js_files[@]}" | brotli -q 11 -c | wc -c | tr -d ' ')"
printf 'agent: %-22s %8s %8s %8s\n' "wasm + js (separately)" \
  "$(( $(size "$out/pulse_bg.wasm") + $(cat "${js_files[@]}" | wc -c) ))" \
  "$(( $(gz "$out/pulse_bg.wasm") + $(cat "${js_files[@]}" | gzip -9c | wc -c) ))" \
  "$(( $(br "$out/pulse_bg.wasm") + $(cat "${js_files[@]}" | brotli -q 11 -c | wc -c) ))"
