// Pulse real-user monitoring agent. Usage:
//   import { init } from './pulse.js';
//   const pulse = await init({ endpoint: '/v1/beacon', site: 'my-site' });
//
// The entry the page imports. `./pulse_glue.js` is wasm-bindgen's glue; the build
// (scripts/build-agent.sh) bundles the three (this entry, the glue, js/host.js) into the one
// `pulse.js` pages load, beside the content-hashed wasm.
import load, { start } from './pulse_glue.js';

let loading;

/**
 * Loads the WebAssembly (once) and starts measuring; resolves to the agent's handle. Where
 * WebAssembly cannot run (an old browser, or a Content-Security-Policy without
 * 'wasm-unsafe-eval') it rejects with an Error that says so, having changed nothing on the page.
 */
export async function init(options) {
  if (typeof WebAssembly != 'object') throw Error('pulse.init: this browser cannot run WebAssembly; the agent is off');
  loading = loading || load().catch((e) => {
    loading = 0;
    const m = String(e && e.message);
    throw Error('pulse.init: the agent is off: ' + (/Security.Policy|CSP|eval/i.test(m)
      ? "this page's Content-Security-Policy blocks WebAssembly (allow 'wasm-unsafe-eval' in script-src): "
      : 'its WebAssembly did not load: ') + m, { cause: e });
  });
  await loading;
  return start(options);
}
