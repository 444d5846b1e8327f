// Word-level differences between outputs: the words outside the longest common
// subsequence with the reference output are highlighted.

import { el } from "./dom.js";

// Beyond this many words per side the O(n*m) table is too slow to be worth it.
const MAX_WORDS = 3000;

// Words and the whitespace between them, alternating; only words are compared.
export function tokens(text) {
  return text.split(/(\s+)/).filter((t) => t.length > 0);
}

function words(parts) {
  return parts.map((t, i) => ({ t, i })).filter(({ t }) => !/^\s+$/.test(t));
}

// Indices (into `a`'s parts) of the words of `a` that are in an LCS with `b`.
function common(a, b) {
  const n = a.length;
  const m = b.length;
  const table = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i][j] = a[i].t === b[j].t ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const kept = new Set();
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i].t === b[j].t) {
      kept.add(a[i].i);
      i++;
      j++;
    } else if (table[i + 1][j] >= table[i][j + 1]) i++;
    else j++;
  }
  return kept;
}

// For each text, the set of part indices that differ: from the reference (texts[0])
// for the others; for the reference, words missing from any other output.
export function differing(texts) {
  const parts = texts.map(tokens);
  const wordLists = parts.map(words);
  if (wordLists.some((w) => w.length > MAX_WORDS)) return null;
  const result = parts.map(() => new Set());
  const reference = wordLists[0];
  for (let k = 1; k < texts.length; k++) {
    const keptOther = common(wordLists[k], reference);
    for (const { i } of wordLists[k]) if (!keptOther.has(i)) result[k].add(i);
    const keptRef = common(reference, wordLists[k]);
    for (const { i } of reference) if (!keptRef.has(i)) result[0].add(i);
  }
  return { parts, result };
}

// Replace `node`'s text with the same text, differing words in <mark>.
export function render(node, parts, marked) {
  node.replaceChildren(...parts.map((t, i) => (marked.has(i) ? el("mark", { class: "diff" }, t) : t)));
}
