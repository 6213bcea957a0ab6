// The slow button's click handler, in a script of its own that Vite copies as it is (not bundled,
// not minified): the long animation frame it makes names this file and this function, which the
// end-to-end test checks Pulse reports as web-vitals does (`longestScript…`). Loaded with a query
// and a fragment, which both libraries' URLs leave out.
function blockTheMainThread() {
  const until = performance.now() + 250;
  while (performance.now() < until) { /* busy */ }
  document.getElementById('result').textContent = 'blocked 250 ms';
}
document.getElementById('slow-button').addEventListener('click', blockTheMainThread);
