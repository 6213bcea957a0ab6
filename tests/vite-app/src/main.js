import { init } from '@pulse-rum/agent';
// Google's web-vitals (its attribution build) on the same page load, so the end-to-end test can
// compare the numbers and their attribution.
import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals/attribution';
import { plain } from './plain.js';


window.webVitals = {};
window.webAttribution = {};
for (const on of [onCLS, onFCP, onINP, onLCP, onTTFB]) {
  on((metric) => {
    window.webVitals[metric.name] = metric.value;
    window.webAttribution[metric.name] = plain(metric.attribution);
  });
}

// Whether the agent reported LCP inside the page's handling of a click (it should wait for the
// next paint, as web-vitals does): set by the first capturing listener, cleared by the last.
addEventListener('click', () => { window.inClick = true; }, true);
addEventListener('click', () => { window.inClick = false; });

window.pulseVitals = {};
window.pulseAttribution = {};
init({ endpoint: '/v1/beacon', site: 'demo', release: 'vite-example' }).then((pulse) => {
  pulse.onMetric((metric) => {
    window.pulseVitals[metric.name] = metric.value;
    window.pulseAttribution[metric.name] = plain(metric.attribution);
    if (metric.name === 'LCP') window.lcpInClick = !!window.inClick;
  });
  window.pulse = pulse;
  pulse.record('vite.loaded', 1, { bundler: 'vite' });
});

// The slow button's handler is in public/slow.js (a script of its own, for its long animation frame).
const result = document.getElementById('result');
for (const [id, path] of [['fetch-ok', '/demo/api/ok'], ['fetch-fail', '/demo/api/fail']]) {
  document.getElementById(id).addEventListener('click', async () => {
    const response = await fetch(path);
    result.textContent = `${path} → ${response.status}`;
    result.dataset.done = String(Number(result.dataset.done || 0) + 1);
  });
}

// Content that shifts after the first paint, so CLS is not zero.
setTimeout(() => {
  const banner = document.createElement('div');
  banner.style.height = '80px';
  banner.id = 'late-banner';
  banner.textContent = 'A late banner';
  document.body.prepend(banner);
}, 300);
