/** Options of `init`. */
export interface PulseConfig {
  /** The collector's beacon URL, absolute or relative to the page (e.g. "/v1/beacon"). */
  endpoint: string;
  /** The site key the collector knows this site by. */
  site: string;
  /** Your release or version, to compare releases. */
  release?: string;
  /** Environment name (production, staging …). */
  env?: string;
  /** Share of sessions measured, 0..1 (default 1); decided once per session. */
  sampleRate?: number;
  /** Send when this many metrics are waiting (1..500, default 50). */
  batchSize?: number;
  /** Send at least this often while metrics wait, ms (1000..600000, default 30000). */
  flushInterval?: number;
  /** fetch calls whose absolute URL contains one of these strings or matches one of these RegExps are not timed. */
  ignoreUrls?: (string | RegExp)[];
  /** Path templates: "/products/:slug" (one segment), "/docs/*" (the rest). */
  routes?: string[];
  /** Sees each metric before it is queued: return it (possibly changed), or null/false to drop it. Anything else (also undefined, a missing return) drops it with a console warning, counted in `beforeSendErrors`. */
  beforeSend?: (metric: PulseMetric) => PulseMetric | null | false;
  /** Time the page's fetch calls (default true). */
  trackFetch?: boolean;
  /** Record performance.measure() entries as custom metrics (default true). */
  trackMeasures?: boolean;
  /**
   * Single-page apps: each soft navigation (a click that changes the URL and paints new content)
   * is a page view of its own, with its own FCP, LCP, CLS, INP and TTFB (0), as web-vitals'
   * `reportSoftNavs`. Default false: it changes when the first page's CLS and INP are final.
   * Browsers without soft-navigation entries measure as if it were off.
   */
  softNavigations?: boolean;
}

/** One measurement, as sent to the collector. */
export interface PulseMetric {
  /** FCP, LCP, CLS, FID, INP, TTFB; "api" for fetch calls; or a custom name. */
  name: string;
  value: number;
  /** Epoch ms when measured. */
  at: number;
  rating?: "good" | "needs-improvement" | "poor";
  delta?: number;
  id?: string;
  /** A vital's report number for its `id` (1, 2, …): the collector keeps the highest as final. */
  n?: number;
  attribution?: Record<string, string | number>;
  route?: string;
  method?: string;
  status?: number;
  ok?: boolean;
  error?: string;
  server_timing?: { name: string; dur?: number; desc?: string }[];
  tags?: Record<string, string>;
}

/** What the agent has done so far. */
export interface PulseStats {
  measured: number;
  sent: number;
  beacons: number;
  retried: number;
  droppedUnsampled: number;
  droppedByBeforeSend: number;
  beforeSendErrors: number;
  droppedQueueFull: number;
  droppedTooLarge: number;
  rejectedRecords: number;
  /** Main-thread time spent in agent code (callbacks, the fetch wrapper, API calls), ms. */
  busyMs: number;
  /** The longest single stretch of agent code, ms. */
  longestMs: number;
}

/** The handle `init` resolves to. It drives the agent it was returned by, only: after `shutdown()` it does nothing (and `record` throws), also when a new agent has been started since. */
export interface Pulse {
  /** Records a custom metric: `record('cart.items', 3, { plan: 'pro' })`. Throws an `Error` saying what is wrong with a bad name, value or tags (and counts it in `stats()`). */
  record(name: string, value: number, tags?: Record<string, string>): void;
  /** Sends everything waiting now. */
  flush(): void;
  /** Sends what is waiting, stops every observer and listener, and restores the page's `fetch`. */
  shutdown(): void;
  /** Calls `callback` with every metric measured (vitals when they are reported, API calls, custom metrics), whether or not the session is sampled. */
  onMetric(callback: (metric: PulseMetric) => void): void;
  /** Counts of what the agent measured, sent and dropped, and the time it spent (after `shutdown()`: its last counts). */
  stats(): PulseStats;
  /** Does nothing (kept from earlier versions; `shutdown()` stops the agent and frees what it holds). */
  free(): void;
  /** Whether this session is sampled (its metrics are sent). */
  readonly sampled: boolean;
  /** The session id (kept in `sessionStorage` across page views of the tab). */
  readonly session: string | undefined;
  /** The page-view id. */
  readonly page: string | undefined;
}

/**
 * Loads the WebAssembly (once) and starts measuring; resolves to the agent's handle. Rejects with
 * an Error naming the option when the options are wrong, and with an Error saying so when
 * WebAssembly cannot run (an old browser, or a Content-Security-Policy without 'wasm-unsafe-eval').
 */
export function init(options: PulseConfig): Promise<Pulse>;
