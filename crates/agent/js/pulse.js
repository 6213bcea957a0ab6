// Pulse real-user monitoring agent. Usage:
//   import { init } from './pulse.js';
//   const pulse = await init({ endpoint: '/v1/beacon', site: 'my-site' });
//
// The entry the page imports: small and revalidated. `./pulse_glue.js` is wasm-bindgen's glue; the
// build (scripts/build-agent.sh) renames it with a content hash, cached for a year, and rewrites
// this import to match.
import load, { start } from './pulse_glue.js';

let loading;

/** Loads the WebAssembly (once) and starts measuring; resolves to the agent's handle. */
export async function init(options) {
  loading = loading || load();
  await loading;
  return start(options);
}
