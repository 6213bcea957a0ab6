import type { Pulse, PulseConfig } from './pulse_glue.js';
export type { Pulse, PulseConfig, PulseMetric, PulseStats } from './pulse_glue.js';
/** Loads the WebAssembly (once) and starts measuring; resolves to the agent's handle. */
export function init(options: PulseConfig): Promise<Pulse>;
