#!/usr/bin/env bash
# Builds the size spike (src/lib.rs) as the agent is built — cargo, wasm-bindgen, wasm-opt -Oz,
# esbuild — and prints the brotli -q 11 size of its wasm and of its JS. Output in the repository's target/agent-spike.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/.pulse/tools/node_modules/.bin"
cd "$here"
CARGO_TARGET_DIR="$root/target/agent-spike" cargo build --quiet --release --target wasm32-unknown-unknown
out="$root/target/agent-spike/out"
rm -rf "$out" && "${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen" --target web --out-dir "$out" --out-name agent_spike \
  "$root/target/agent-spike/wasm32-unknown-unknown/release/agent_spike.wasm"
"$tools/wasm-opt" -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue "$out/agent_spike_bg.wasm" -o "$out/opt.wasm"
host="$(cd "$out" && ls -d snippets/*/host.js)"
sed "s#./out/snippets/HOST/host.js#./$host#; s#./out/agent#./agent#" "$here/entry.js" >"$out/entry.js"
"$tools/esbuild" "$out/entry.js" --bundle --minify --format=esm --log-level=error --outfile="$out/bundle.js"
wasm=$(brotli -q 11 -c "$out/opt.wasm" | wc -c)
js=$(brotli -q 11 -c "$out/bundle.js" | wc -c)
echo "agent spike: wasm $(wc -c <"$out/opt.wasm") B raw, $wasm B brotli; JS $(wc -c <"$out/bundle.js") B raw, $js B brotli; total $((wasm + js)) B brotli"
