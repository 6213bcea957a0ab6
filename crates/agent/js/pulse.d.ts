import type { Pulse, PulseConfig } from './pulse_glue.js';
export type { Pulse, PulseConfig, PulseMetric, PulseStats } from './pulse_glue.js';
/**
 * Loads the WebAssembly (once) and starts measuring; resolves to the agent's handle. Rejects with
 * an Error naming the option when the options are wrong, and with an Error saying so when
 * WebAssembly cannot run (an old browser, or a Content-Security-Policy without 'wasm-unsafe-eval').
 */
export function init(options: PulseConfig): Promise<Pulse>;
