// Pulse real-user monitoring agent. Usage:
//   import { init } from './pulse.js';
//   const pulse = await init({ endpoint: '/v1/beacon', site: 'my-site' });
//
// The entry the page imports: it loads the WebAssembly with `./host.js` (the binding that only
// forwards) as its imports and hands the page a handle whose methods call the wasm's exports.
// The build (scripts/build-agent.sh) bundles the two into the one `pulse.js` pages load, beside
// the content-hashed wasm.
import { host } from './host.js';

const { scoped: run, setup, hold } = host;

let loading;
// Keeps the newest handle's final stats and sampling decision (see `init`).
let retire = () => {};

/**
 * Loads the WebAssembly (once) and starts measuring; resolves to the agent's handle. Where
 * WebAssembly cannot run (an old browser, or a Content-Security-Policy without
 * 'wasm-unsafe-eval') it rejects with an Error that says so, having changed nothing on the page.
 */
export async function init(options) {
  if (typeof WebAssembly != 'object') throw Error('pulse.init: this browser cannot run WebAssembly; the agent is off');
  // Compiled while it downloads; a server that does not send application/wasm gets the bytes compiled.
  const url = new URL('./pulse_bg.wasm', import.meta.url), imports = { h: host };
  const bytes = () => fetch(url).then((r) => r.arrayBuffer()).then((b) => WebAssembly.instantiate(b, imports));
  loading = loading || (WebAssembly.instantiateStreaming
    ? WebAssembly.instantiateStreaming(fetch(url), imports).catch((e) => (e instanceof TypeError ? bytes() : Promise.reject(e)))
    : bytes())
    .then((m) => m.instance.exports)
    .catch((e) => {
      loading = 0;
      const m = String(e && e.message);
      throw Error('pulse.init: the agent is off: ' + (/Security.Policy|CSP|eval/i.test(m)
        ? "this page's Content-Security-Policy blocks WebAssembly (allow 'wasm-unsafe-eval' in script-src): "
        : 'its WebAssembly did not load: ') + m, { cause: e });
    });
  // The wasm's exports (src/abi.rs): s start, e ev, r record, f flush, d shutdown, o on_metric, a about.
  const w = await loading;
  // Each call runs in `scoped`: the page objects it hands over are released when it returns.
  const check = (ok) => { if (!ok) throw Error(host.given); };
  setup(w.e, w.memory);
  // The wasm answers stats and sampled for the newest agent only: the one before keeps its last
  // answers when a new one starts, and answers live for as long as the wasm still does.
  retire();
  const handle = run(() => w.s(hold(options)));
  check(handle);
  const text = (what) => run(() => (w.a(handle, what) ? host.given : undefined));
  const live = () => !!run(() => w.a(handle, 0));
  let last, sampled;
  retire = () => {
    last = text(3);
    sampled = live();
  };
  return {
    record: (name, value, tags) => run(() => check(w.r(handle, hold(name), hold(value), hold(tags)))),
    flush: () => run(() => w.f(handle)),
    shutdown: () => run(() => w.d(handle)),
    onMetric: (callback) => run(() => w.o(handle, hold(callback))),
    stats: () => { const s = text(3) || last; return s && JSON.parse(s); },
    // The wasm-bindgen class this replaces had it; the agent's memory is freed by shutdown().
    free: () => {},
    get sampled() { return text(3) ? live() : sampled; },
    get session() { return text(1); },
    get page() { return text(2); },
  };
}
