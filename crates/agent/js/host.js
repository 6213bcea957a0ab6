// The agent's binding to the page. It only forwards: the WebAssembly decides what to observe, what
// to listen to and when to send; these functions register what it asks for, hand it entries,
// events and the outcome of requests, read the fields it names and call the browser APIs it
// names. No measurement, batching or formatting happens here.
//
// Only numbers cross: page objects stay in a table here and the wasm names them by index (a
// handle); strings cross as UTF-8 bytes in the wasm's memory (pointer, length). Handles ≥ 0 are
// scratch, valid until the outermost call from the page into the agent returns (`scoped`); the
// first six are fixed roots. Handles < 0 are kept until the wasm frees them.
//
// Its functions are the methods of one object, `host` (a module namespace would cost the bundle a
// getter per export), each named by one letter: the wasm's import name, which abi.rs maps to the
// Rust name (in a comment after each). The page build passes it as the wasm's import module `h`;
// the browser tests' build (wasm-bindgen, crates/agent/src/abi.rs) imports the same functions
// from it (`js_namespace = host`).

const g = globalThis;
const enc = new TextEncoder();
const dec = new TextDecoder();
// 0 undefined, 1 window, 2 document, 3 performance, 4 navigator, 5 location.
const ROOTS = 6;
let T = [undefined, g, g.document, g.performance, g.navigator, g.location];
let kept = [];
let free = [];
let sink = null;
let mem = null;
let bytes = new Uint8Array(0);
let keys = {};
let observers = {};
let listeners = [];
let timers = [];
let undo = [];
let pageFetch = null;
// The start this is (stop counts up): a callback from before it, such as a request the last agent
// was timing, or a wrapper another script wrapped again, reaches no one.
let gen = 0;

const put = (v) => T.push(v) - 1;
const obj = (h) => (h < 0 ? kept[~h] : T[h]);
const str = (p, n) => dec.decode(new Uint8Array(mem.buffer, p, n));
// Field names are the wasm's constants: decoded once per address.
const key = (p, n) => keys[p * 256 + n] || (keys[p * 256 + n] = str(p, n));
const text = (v) => (typeof v == 'string' ? (bytes = enc.encode(v)).length : -1);
// A throwing getter reads as undefined (and a throwing toString as '', a Proxy's keys as none):
// page objects never throw through the wasm.
const field = (h, p, n) => { try { const o = obj(h); return o == null ? undefined : o[key(p, n)]; } catch (e) {} };

// Runs `f` with scratch handles released afterwards.
function scoped(f) {
  const base = T.length;
  try { return f(); } finally { T.length = Math.max(base, ROOTS); }
}
// One event for the wasm: `a` and `b` (entry, event, request …) get handles h and h + 1; from a
// callback of start `s`, only while that start runs.
const call = (code, a, b, n, s = gen) => (sink && s == gen ? scoped(() => { const h = put(a); put(b); return sink(code, h, n || 0); }) : 0);
// How a promise settles, as event `code`: (value) or (undefined, reason), with `n`.
const settle = (p, code, n, s = gen) => Promise.resolve(p).then((r) => call(code, r, undefined, n, s), (e) => call(code, undefined, e, n, s));

// The import object: what the wasm imports (as module `h`), and what js/pulse.js uses (`setup`,
// `hold`, `scoped`, `given`).
export const host = {
  scoped,
  // Before each start. The page's fetch is taken while no agent has wrapped it (not the agent's
  // wrapper; again after a start that failed).
  setup(callback, memory) {
    if (!undo.length) pageFetch = typeof g.fetch == 'function' ? g.fetch : null;
    sink = callback;
    mem = memory;
  },
  a() { // stop
    sink = null;
    gen++;
    for (const c in observers) observers[c].disconnect();
    for (const [t, type, f] of listeners) t.removeEventListener(type, f, true);
    for (const t of timers) clearTimeout(t); // clears intervals too: they share the ids
    for (const u of undo) u();
    observers = {};
    listeners = [];
    timers = [];
    undo = [];
  },
  // A value the page passes in (an option, a record's argument): its scratch handle.
  hold: put,

  // Handles.
  b(h) { // keep
    const i = free.length ? free.pop() : kept.length;
    kept[i] = obj(h);
    return ~i;
  },
  c(h) { if (h < 0) { kept[~h] = undefined; free.push(~h); } }, // release
  d(h, p, n) { return put(field(h, p, n)); }, // get
  e(h, i) { const o = obj(h); return put(o == null ? undefined : o[i]); }, // at
  f(h, p, n) { const v = field(h, p, n); return typeof v == 'number' ? v : NaN; }, // num
  g(h) { const v = obj(h); return typeof v == 'number' ? v : NaN; }, // value
  // A string field into the byte buffer (its length, or -1 when it is not a string); `copy` moves
  // the buffer into the wasm's memory.
  h(h, p, n) { return text(field(h, p, n)); }, // txt
  i(h) { try { return text(String(obj(h))); } catch (e) { return text(''); } }, // string
  j(p) { new Uint8Array(mem.buffer, p, bytes.length).set(bytes); }, // copy
  // `o[k] === s`, without copying the string into the wasm.
  k(h, p, n, sp, sn) { return field(h, p, n) === str(sp, sn) ? 1 : 0; }, // is
  // 0 undefined/null, 1 false, 2 true, 3 number, 4 string, 5 function, 6 array, 7 RegExp, 8 other object.
  l(h) { // kind
    const v = obj(h);
    if (v == null) return 0;
    if (typeof v == 'boolean') return v ? 2 : 1;
    if (typeof v == 'number') return 3;
    if (typeof v == 'string') return 4;
    if (typeof v == 'function') return 5;
    if (Array.isArray(v)) return 6;
    return v instanceof RegExp ? 7 : 8;
  },
  m(h) { const v = obj(h); return Array.isArray(v) ? v.length : 0; }, // len
  // An object's own [key, value] pairs, as an array.
  n(h) { try { return put(Object.entries(obj(h))); } catch (e) { return put([]); } }, // pairs

  // Observers, listeners, timers. A buffered PerformanceObserver of one entry type; 0 when the
  // browser lacks the type or refuses the options; threshold > 0 is its durationThreshold.
  o(p, n, code, threshold) { // observe
    const type = str(p, n);
    try {
      if (!(PerformanceObserver.supportedEntryTypes || []).includes(type)) return 0;
      const o = new PerformanceObserver((list) => { for (const e of list.getEntries()) call(code, e); });
      o.observe(threshold > 0 ? { type, buffered: true, durationThreshold: threshold } : { type, buffered: true });
      observers[code] = o;
      return 1;
    } catch (e) {
      return 0;
    }
  },
  // Entries recorded but not yet delivered, as an array.
  p(code) { return put(observers[code] ? observers[code].takeRecords() : []); }, // take
  // target 1 window, 2 document.
  q(target, p, n, code) { // listen
    const t = T[target], type = str(p, n);
    if (!t) return;
    const f = (e) => call(code, e);
    t.addEventListener(type, f, true);
    listeners.push([t, type, f]);
  },
  r(ms, code) { timers.push(setInterval(() => call(code), ms)); }, // every
  s(ms, code) { timers.push(setTimeout(() => call(code), ms)); }, // later
  t(code) { const s = gen; requestAnimationFrame(() => requestAnimationFrame(() => call(code, 0, 0, 0, s))); }, // paint

  // Replaces fetch with a wrapper that returns exactly what the page's fetch returns (the same
  // promise; a synchronous throw passes through) and tells the wasm how the call ended.
  u(begin, end) { // wrap_fetch
    const inner = pageFetch, s = gen;
    if (!inner) return;
    const wrapper = function (input, init) {
      let id = 0;
      try { id = call(begin, input, init, 0, s); } catch (e) {}
      const p = inner.apply(g, arguments);
      if (id) settle(p, end, id, s);
      return p;
    };
    g.fetch = wrapper;
    undo.push(() => { if (g.fetch === wrapper) g.fetch = inner; });
  },
  // Wraps XMLHttpRequest.prototype.open/send the same way; the finished request is handed over.
  v(begin, end) { // wrap_xhr
    const X = typeof XMLHttpRequest == 'function' ? XMLHttpRequest.prototype : null;
    if (!X) return;
    const open = X.open, send = X.send, s = gen;
    const o = (X.open = function (method, url) {
      // Opened again while a request runs: that request ends without loadend, so its listener goes.
      const last = this.__pulse;
      if (last && last[2]) this.removeEventListener('loadend', last[2]);
      this.__pulse = [String(method), String(url)];
      return open.apply(this, arguments);
    });
    const w = (X.send = function () {
      const info = this.__pulse;
      let id = 0, f;
      try { id = info ? call(begin, info[0], info[1], 0, s) : 0; } catch (e) {}
      if (id) this.addEventListener('loadend', (info[2] = f = () => call(end, this, undefined, id, s)), { once: true });
      // A send that throws (sent twice, not opened) ends nothing.
      try { return send.apply(this, arguments); } catch (e) { if (f) this.removeEventListener('loadend', f); throw e; }
    });
    // Only our own wrappers are taken back: another script's, wrapped over them, stay.
    undo.push(() => { if (X.open === o) X.open = open; if (X.send === w) X.send = send; });
  },

  // Sending.
  w(up, un, bp, bn) { // beacon
    try { return typeof navigator.sendBeacon == 'function' && navigator.sendBeacon(str(up, un), str(bp, bn)) ? 1 : 0; } catch (e) { return 0; }
  },
  // POST with keepalive through the page's own fetch; the outcome comes back as (code, response,
  // error, token). 0 when it could not even start.
  x(up, un, bp, bn, code, token) { // post
    if (!pageFetch) return 0;
    try {
      const init = { method: 'POST', body: str(bp, bn), keepalive: true, credentials: 'omit', headers: { 'content-type': 'text/plain;charset=UTF-8' } };
      // After stop (a listener shut the agent down, its last beacon refused): the outcome reaches no one.
      settle(pageFetch.call(g, str(up, un), init), code, token, sink ? gen : -1);
      return 1;
    } catch (e) {
      return 0;
    }
  },

  // Browser APIs the wasm names.
  y(p, n) { try { return put(performance.getEntriesByType(str(p, n))); } catch (e) { return 0; } }, // entries
  // The last resource entry of a URL whose request started by `before`.
  z(p, n, before) { // resource
    try { return put(performance.getEntriesByName(str(p, n), 'resource').findLast((e) => (e.requestStart || e.startTime) <= before)); } catch (e) { return 0; }
  },
  A() { return performance.now(); }, // now
  B() { return Date.now(); }, // epoch
  C() { return Math.random(); }, // random
  // Resolved as fetch and sendBeacon resolve it: against the document's base URL (`<base href>`).
  D(p, n) { try { return put(new URL(str(p, n), document.baseURI)); } catch (e) { return 0; } }, // url
  // A response header of a Response or an XMLHttpRequest, into the byte buffer.
  E(h, p, n) { // header
    const o = obj(h);
    try { return text((o.headers ? o.headers.get(str(p, n)) : o.getResponseHeader(str(p, n))) ?? undefined); } catch (e) { return -1; }
  },
  F(p, n) { return parseFloat(str(p, n)); }, // float
  G(p, n) { try { return text(sessionStorage.getItem(str(p, n)) ?? undefined); } catch (e) { return -1; } }, // load
  H(kp, kn, vp, vn) { try { sessionStorage.setItem(str(kp, kn), str(vp, vn)); } catch (e) {} }, // save
  // On a fresh copy: a global or sticky RegExp starts at 0 each time, a frozen one works, and the
  // page's own lastIndex is left alone.
  I(h, p, n) { try { return new RegExp(obj(h)).test(str(p, n)) ? 1 : 0; } catch (e) { return 0; } }, // test
  J(p, n) { return put(JSON.parse(str(p, n))); }, // parse
  K(h) { try { return text(JSON.stringify(obj(h))); } catch (e) { return -1; } }, // stringify
  // Calls a page function with one argument: the result's handle, or -1 - the thrown error's.
  L(f, a) { try { return put(obj(f)(obj(a))); } catch (e) { return -1 - put(e); } }, // invoke
  // `o[k]()`, or undefined when it is not a method or throws.
  M(h, p, n) { try { return put(obj(h)[key(p, n)]()); } catch (e) { return 0; } }, // method
  N(error, p, n, h) { (error ? console.error : console.warn)(str(p, n), obj(h)); }, // log
  // What the wasm last gave the page (`give`): the answer, or the message of the error it raised.
  given: '',
  O(p, n) { host.given = str(p, n); }, // give
};
