// The agent's binding to the page. It only forwards: the WebAssembly decides what to observe, what
// to listen to and when to send; these functions register what it asks for, hand it entries,
// events and the outcome of requests through one callback (`sink`), read fields it names, and
// call the browser APIs it names. No measurement, batching or formatting happens here.
//
// sink(code, a, b, n) → number: `code` is the number the wasm gave when it asked for the
// observer, listener, timer or wrapper; `a` and `b` are the entry / event / request objects;
// `n` a number (a request's id). The wrappers use its return value as a request id (0: not timed).

const g = globalThis;
let sink = null;
let observers = {};
let listeners = [];
let timers = [];
let undo = [];
let pageFetch = null;

const call = (code, a, b, n) => (sink ? sink(code, a, b, n || 0) : 0);

export function start(callback) {
  sink = callback;
  pageFetch = typeof g.fetch === 'function' ? g.fetch : null;
}

export function stop() {
  sink = null;
  for (const o of Object.values(observers)) o.disconnect();
  for (const [t, type, f] of listeners) t.removeEventListener(type, f, true);
  for (const t of timers) { clearInterval(t); clearTimeout(t); }
  for (const u of undo) u();
  observers = {};
  listeners = [];
  timers = [];
  undo = [];
}

// A PerformanceObserver of one entry type (buffered); false when the browser lacks the type or
// refuses the options. threshold > 0 is passed as durationThreshold.
export function observe(type, code, threshold) {
  try {
    if (!(PerformanceObserver.supportedEntryTypes || []).includes(type)) return false;
    const o = new PerformanceObserver((list) => { for (const e of list.getEntries()) call(code, e); });
    o.observe(threshold > 0 ? { type, buffered: true, durationThreshold: threshold } : { type, buffered: true });
    observers[code] = o;
    return true;
  } catch (e) {
    return false;
  }
}

// Entries recorded but not yet delivered, as an array (the wasm reads them; nothing is called).
export function take(code) {
  return observers[code] ? observers[code].takeRecords() : [];
}

// target: 0 window, 1 document.
export function listen(target, type, code) {
  const t = target ? g.document : g;
  if (!t) return;
  const f = (e) => call(code, e);
  t.addEventListener(type, f, true);
  listeners.push([t, type, f]);
}

export function every(ms, code) { timers.push(setInterval(() => call(code), ms)); }
export function later(ms, code) { timers.push(setTimeout(() => call(code), ms)); }
export function paint(code) { requestAnimationFrame(() => requestAnimationFrame(() => call(code))); }

// Replaces fetch with a wrapper that returns exactly what the page's fetch returns (the same
// promise; a synchronous throw passes through) and tells the wasm how the call ended.
export function wrapFetch(begin, end) {
  const inner = pageFetch;
  if (!inner) return;
  const wrapper = function (input, init) {
    let id = 0;
    try { id = call(begin, input, init); } catch (e) {}
    const p = inner.apply(g, arguments);
    if (id) Promise.resolve(p).then((r) => call(end, r, undefined, id), (e) => call(end, undefined, e, id));
    return p;
  };
  g.fetch = wrapper;
  undo.push(() => { if (g.fetch === wrapper) g.fetch = inner; });
}

// Wraps XMLHttpRequest.prototype.open/send the same way; the finished request is handed over.
export function wrapXhr(begin, end) {
  const X = typeof XMLHttpRequest === 'function' ? XMLHttpRequest.prototype : null;
  if (!X) return;
  const open = X.open, send = X.send;
  X.open = function (method, url) {
    this.__pulse = [String(method), String(url)];
    return open.apply(this, arguments);
  };
  X.send = function () {
    const info = this.__pulse;
    let id = 0;
    try { id = info ? call(begin, info[0], info[1]) : 0; } catch (e) {}
    if (id) this.addEventListener('loadend', () => call(end, this, undefined, id), { once: true });
    return send.apply(this, arguments);
  };
  undo.push(() => { if (X.open !== open) X.open = open; if (X.send !== send) X.send = send; });
}

export function beacon(url, body) {
  try { return typeof navigator.sendBeacon === 'function' && navigator.sendBeacon(url, body); } catch (e) { return false; }
}

// POST with keepalive through the page's own fetch; the outcome comes back as (code, response,
// error, token). False when it could not even start.
export function post(url, body, code, token) {
  if (!pageFetch) return false;
  try {
    const init = { method: 'POST', body, keepalive: true, credentials: 'omit', headers: { 'content-type': 'text/plain;charset=UTF-8' } };
    Promise.resolve(pageFetch.call(g, url, init)).then((r) => call(code, r, undefined, token), (e) => call(code, undefined, e, token));
    return true;
  } catch (e) {
    return false;
  }
}

// Reading values the wasm names.
export function num(o, k) { const v = o == null ? undefined : o[k]; return typeof v === 'number' ? v : NaN; }
export function text(o, k) { const v = o == null ? undefined : o[k]; return typeof v === 'string' ? v : undefined; }
export function get(o, k) { return o == null ? undefined : o[k]; }
export function is(o, k, v) { return o != null && o[k] === v; }
// 0 undefined/null, 1 boolean false, 2 boolean true, 3 number, 4 string, 5 function, 6 array, 7 RegExp, 8 other object.
export function kind(v) {
  if (v == null) return 0;
  if (typeof v === 'boolean') return v ? 2 : 1;
  if (typeof v === 'number') return 3;
  if (typeof v === 'string') return 4;
  if (typeof v === 'function') return 5;
  if (Array.isArray(v)) return 6;
  return v instanceof RegExp ? 7 : 8;
}
export function len(v) { return Array.isArray(v) ? v.length : 0; }
export function at(v, i) { return v[i]; }
export function keys(o) { return Object.keys(o).join('\n'); }
export function string(v) { return String(v); }
// 0 window, 1 document, 2 performance, 3 navigator, 4 location.
export function root(i) { return [g, g.document, g.performance, g.navigator, g.location][i]; }
export function entries(type) { try { return performance.getEntriesByType(type); } catch (e) { return []; } }
// The last resource entry of `url` whose request started by `before`.
export function resource(url, before) {
  try { return performance.getEntriesByName(url, 'resource').findLast((e) => (e.requestStart || e.startTime) <= before); } catch (e) { return undefined; }
}
export function now() { return performance.now(); }
export function epoch() { return Date.now(); }
export function random() { return Math.random(); }
export function url(u) { try { return new URL(u, location.href); } catch (e) { return undefined; } }
export function header(o, name) {
  try { return (o.headers ? o.headers.get(name) : o.getResponseHeader(name)) ?? undefined; } catch (e) { return undefined; }
}
export function float(s) { return parseFloat(s); }
export function load(key) { try { return sessionStorage.getItem(key) ?? undefined; } catch (e) { return undefined; } }
export function save(key, value) { try { sessionStorage.setItem(key, value); } catch (e) {} }
export function test(re, s) { re.lastIndex = 0; return re.test(s); }
export function parse(json) { return JSON.parse(json); }
export function stringify(v) { try { return JSON.stringify(v); } catch (e) { return undefined; } }
export function invoke(f, arg) { return f(arg); }
// `o[k]()`, or undefined when it is not a method or throws.
export function method(o, k) { try { return o[k](); } catch (e) { return undefined; } }
export function log(error, message, detail) { (error ? console.error : console.warn)(message, detail); }
