// The spike's entry: loads the wasm, hands the binding the agent's event function, starts.
import load, { start } from './out/agent_spike.js';
import { setup, record } from './out/snippets/HOST/host.js';
export async function init(options) {
  const w = await load();
  let a;
  setup((c) => a && a.ev(c), options, w.memory);
  a = start();
  return {
    record: (name, value, tags) => record(a, name, value, tags),
  };
}
