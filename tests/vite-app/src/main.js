import { init } from '@pulse-rum/agent';

init({ endpoint: '/v1/beacon', site: 'demo', release: 'vite-example' }).then((pulse) => {
  window.pulse = pulse;
  pulse.record('vite.loaded', 1, { bundler: 'vite' });
});

const result = document.getElementById('result');
document.getElementById('slow-button').addEventListener('click', () => {
  const until = performance.now() + 250;
  while (performance.now() < until) { /* busy */ }
  result.textContent = 'blocked 250 ms';
});
for (const [id, path] of [['fetch-ok', '/demo/api/ok'], ['fetch-fail', '/demo/api/fail']]) {
  document.getElementById(id).addEventListener('click', async () => {
    const response = await fetch(path);
    result.textContent = `${path} → ${response.status}`;
    result.dataset.done = String(Number(result.dataset.done || 0) + 1);
  });
}
