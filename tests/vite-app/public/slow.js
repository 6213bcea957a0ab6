// The slow button's click handler, in a script of its own that Vite copies as it is (not bundled,
// not minified): the long animation frame it makes names this file and this function, which the
// end-to-end test checks Pulse reports as web-vitals does (`longestScript…`). Loaded with a query
// and a fragment, which both libraries' URLs leave out. After 250 ms of work it adds rows to a
// clipped box and reads its height back: a forced style and layout inside the script, which both
// libraries move from script time to style and layout time.
function blockTheMainThread() {
  const until = performance.now() + 250;
  while (performance.now() < until) { /* busy */ }
  const rows = document.getElementById('rows');
  for (let i = 0; i < 2000; i++) {
    const row = document.createElement('div');
    row.textContent = `row ${i}`;
    rows.append(row);
  }
  rows.dataset.height = String(rows.scrollHeight);
  document.getElementById('result').textContent = 'blocked 250 ms';
}
document.getElementById('slow-button').addEventListener('click', blockTheMainThread);
