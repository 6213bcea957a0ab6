// Spike host (wasm-bindgen, numbers-only): objects in a table, keys and types by number.
const K = ['endpoint','site','sampleRate','release','startTime','value','hadRecentInput','renderTime','loadTime','name','processingStart','responseStart','element','tagName','id','url','href','visibilityState','activationStart','interactionId','duration','target','method','status','persisted','length',0,'beforeSend'];
const T = ['paint','largest-contentful-paint','layout-shift','first-input','visibilitychange','pagehide','keydown','pointerdown',0,'event',0,0,'pageshow'];
let ev, mem, res = 0, slots = [], enc = new TextEncoder(), dec = new TextDecoder();
const str = (p, n) => dec.decode(new Uint8Array(mem.buffer, p, n));
const put = (s, b) => enc.encodeInto(s, b).written;
export function setup(e, o, m) { ev = e; mem = m; slots = [0, o, 0, 0, location, { visibilityState: document.visibilityState, url: performance.getEntriesByType('navigation')[0] }]; }
export function observe(k) { try { new PerformanceObserver((l) => l.getEntries().forEach((e) => { slots[0] = e; ev(k); })).observe({ type: T[k], buffered: true, durationThreshold: 40 }); return 1; } catch (e) { return 0; } }
export function listen(t, k) { (t ? document : window).addEventListener(T[k], (e) => { slots[0] = e; ev(k); }, true); }
export function later(ms, c) { setTimeout(() => ev(c), ms); }
const field = (s, k) => { const o = slots[s]; return o == null ? undefined : k == 26 ? o : k >= 1000 ? o[k - 1000] : o[K[k]]; };
export function num(s, k) { const v = field(s, k); return typeof v == 'number' ? v : v === true ? 1 : NaN; }
export function txt(s, k, b) { const v = field(s, k); return typeof v == 'string' ? put(v, b) : -1; }
export function sub(s, k, to) { const v = field(s, k); slots[to] = v; return v != null ? 1 : 0; }
export const now = () => performance.now(), epoch = () => Date.now(), random = () => Math.random();
export function load(k, b) { try { const v = sessionStorage.getItem('pulse'); if (v) return put(v, b); } catch (e) {} return 0; }
export function save(k, p, n) { try { sessionStorage.setItem('pulse', str(p, n)); } catch (e) {} }
export function send(u, un, b, bn) { try { return navigator.sendBeacon(str(u, un), str(b, bn)) ? 1 : 0; } catch (e) { return 0; } }
export function fail(p, n) { throw Error(str(p, n)); }
export function result(n) { res = n; }
// fetch, wrapped: the same promise back; the wasm is told when a call starts and ends.
export function wrap_fetch() {
  const inner = fetch;
  globalThis.fetch = function (input, init) {
    res = 0;
    try { slots[0] = { url: input instanceof Request ? input.url : String(input) }; slots[1] = init || input; ev(10); } catch (e) {}
    const id = res, p = inner.apply(this, arguments);
    if (id) p.then((r) => { slots[0] = r; slots[2] = { id }; ev(11); }, () => { slots[0] = 0; slots[2] = { id }; ev(11); });
    return p;
  };
}
export function paint(c) { requestAnimationFrame(() => requestAnimationFrame(() => ev(c))); }
export function before_send(p, n, b) {
  const r = slots[6](JSON.parse(str(p, n)));
  return r === false || r == null ? -1 : put(JSON.stringify(r), b);
}
// XMLHttpRequest, wrapped the same way: open records the URL, send starts, loadend ends.
export function wrap_xhr() {
  const X = XMLHttpRequest.prototype, open = X.open, send = X.send;
  X.open = function (method, url) { this.__p = { url: String(url), method: String(method) }; return open.apply(this, arguments); };
  X.send = function () {
    res = 0;
    if (this.__p) { slots[0] = this.__p; slots[1] = this.__p; ev(10); }
    const id = res;
    if (id) this.addEventListener('loadend', () => { slots[0] = this; slots[2] = { id }; ev(11); }, { once: true });
    return send.apply(this, arguments);
  };
}
export function record(a, n, v, t) { slots[7] = n; slots[8] = Object.entries(t || {}); a.record(v); }
