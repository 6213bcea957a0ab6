import { init } from '@pulse-rum/agent';
// Google's web-vitals (its attribution build) with soft navigations on the same page load, so the
// end-to-end test can compare every navigation's numbers and their attribution.
import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals/attribution';
import { plain } from './plain.js';


// Each report as it was at the time (web-vitals hands over the same object again, changed).
window.webVitalsReports = [];
for (const on of [onFCP, onLCP, onCLS, onINP, onTTFB]) {
  on((m) => {
    window.webVitalsReports.push({ name: m.name, value: m.value, id: m.id, nav: m.navigationType, url: m.navigationURL, attribution: plain(m.attribution) });
  }, { reportSoftNavs: true });
}

window.pulseReports = [];
init({ endpoint: '/v1/beacon', site: 'demo', release: 'spa-example', softNavigations: true }).then((pulse) => {
  pulse.onMetric((m) => { window.pulseReports.push({ name: m.name, value: m.value, id: m.id, attribution: plain(m.attribution) }); });
  window.pulse = pulse;
});

const views = {
  '/shop/products/42': ['A product', 'Blue running shoes, size 42. In stock, ships tomorrow.'],
  '/shop/cart': ['The cart', 'Two items: blue running shoes and a water bottle.'],
};

// The router: a click on a route link changes the URL and renders the view in place.
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-route]');
  if (!link) return;
  event.preventDefault();
  const path = new URL(link.href).pathname;
  history.pushState({}, '', path);
  const [title, text] = views[path];
  const view = document.getElementById('view');
  view.replaceChildren();
  const h1 = document.createElement('h1');
  h1.textContent = title;
  const p = document.createElement('p');
  p.textContent = text;
  view.append(h1, p);
  // A banner that arrives later and pushes the view down: a layout shift in this page view.
  setTimeout(() => {
    const banner = document.createElement('div');
    banner.style.height = '60px';
    banner.textContent = `Offers for ${title.toLowerCase()}`;
    banner.className = 'offer';
    view.prepend(banner);
    document.body.dataset.shifted = path;
  }, 700);
});

document.getElementById('quick').addEventListener('click', () => {
  document.body.dataset.quick = String(Number(document.body.dataset.quick || 0) + 1);
});
document.getElementById('slow').addEventListener('click', () => {
  const until = performance.now() + 120;
  while (performance.now() < until) { /* busy */ }
  document.body.dataset.slow = String(Number(document.body.dataset.slow || 0) + 1);
});
