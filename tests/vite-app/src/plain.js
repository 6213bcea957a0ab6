// An attribution object as plain strings and numbers, the way Pulse sends it, so the end-to-end
// tests can compare the two libraries key by key. web-vitals also hands over entries and elements
// (left out) and, where the browser has Long Animation Frames, `longestScript` as an object: it is
// flattened to Pulse's `longestScript…` keys, its URL without query and fragment, and without the
// empty strings Pulse does not send (an anonymous function has `sourceFunctionName` '').
export const plain = (attribution) => {
  const out = Object.fromEntries(
    Object.entries(attribution || {}).filter(([, v]) => typeof v == 'string' || typeof v == 'number'),
  );
  const longest = attribution && attribution.longestScript;
  if (longest) {
    const e = longest.entry;
    const flat = {
      longestScriptSubpart: longest.subpart,
      longestScriptIntersectingDuration: longest.intersectingDuration,
      longestScriptURL: e.sourceURL.split(/[?#]/)[0],
      longestScriptFunction: e.sourceFunctionName,
      longestScriptInvoker: e.invoker,
      longestScriptInvokerType: e.invokerType,
      longestScriptCharPosition: e.sourceCharPosition,
      longestScriptDuration: e.duration,
    };
    for (const [k, v] of Object.entries(flat)) if (v !== '') out[k] = v;
  }
  return out;
};
