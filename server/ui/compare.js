// Compare view: one prompt to every chosen variant at once, streamed side by side.

import { ApiError, postJson, stream } from "./api.js";
import { differing, render } from "./diff.js";
import { el, idFor, number, seconds } from "./dom.js";

const $ = (id) => document.getElementById(id);
let running = null; // AbortController of the comparison in flight
let lastRun = null; // {cards, texts} of the last finished comparison, for the diff toggle

export function initCompare() {
  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    compare();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("compare-form").requestSubmit();
    }
  });
  $("show-diff").addEventListener("change", showDiff);
}

export function setVariants(names) {
  const picker = $("variant-picker");
  const previous = new Set(checked());
  picker.replaceChildren(el("legend", { text: "Variants" }));
  if (names.length === 0) {
    picker.append(el("p", { class: "hint", text: "This server serves no variants." }));
    return;
  }
  names.forEach((name, k) => {
    const on = previous.size ? previous.has(name) : k < 2;
    picker.append(
      el("span", { class: "variant-choice" },
        el("label", {}, el("input", { type: "checkbox", name: "variant", value: name, checked: on }), ` ${name}`),
        el("a", { href: `#artifacts/${encodeURIComponent(name)}`, class: "about",
                  "aria-label": `What is ${name}?`, text: "about" })),
    );
  });
}

function checked() {
  return [...document.querySelectorAll('#variant-picker input[name="variant"]:checked')].map((i) => i.value);
}

function settings() {
  return {
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    seed: Number($("seed").value),
  };
}

function card(name) {
  const stat = (label, key) => [el("dt", { text: label }), el("dd", { "data-stat": key, text: "…" })];
  const heading = idFor("result", name);
  return el("article", { class: "result", "aria-labelledby": heading, "data-variant": name },
    el("header", {},
      el("h3", { id: heading, text: name }),
      el("a", { href: `#artifacts/${encodeURIComponent(name)}`, text: "what is this variant?" })),
    el("div", { class: "output", "aria-live": "polite", "aria-busy": "true", "aria-label": `Output of ${name}` }),
    el("p", { class: "card-error", role: "alert", hidden: true }),
    el("dl", { class: "stats" },
      stat("Tokens", "tokens"), stat("TTFT", "ttft"), stat("Latency", "latency"), stat("Toxicity", "toxicity")));
}

function setStat(node, key, text, title) {
  const dd = node.querySelector(`[data-stat="${key}"]`);
  dd.textContent = text;
  if (title) dd.title = title;
}

async function compare() {
  const names = checked();
  if (names.length === 0) {
    $("compare-status").textContent = "Choose at least one variant.";
    return;
  }
  if (running) running.abort();
  running = new AbortController();
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const prompt = $("prompt").value;
  const cards = names.map(card);
  $("results").replaceChildren(...cards);
  $("diff-legend").hidden = true;
  lastRun = null;
  $("run").disabled = true;
  $("compare-status").textContent = `Generating with ${names.length} variant(s)…`;
  const outcomes = await Promise.all(names.map((name, k) => generate(name, mode, prompt, cards[k], running.signal)));
  $("run").disabled = false;
  const texts = outcomes.map((o) => o.text);
  const ok = outcomes.filter((o) => o.ok).length;
  $("compare-status").textContent = `Done: ${ok} of ${names.length} variant(s) answered. Scoring…`;
  await score(cards, outcomes);
  $("compare-status").textContent = `Done: ${ok} of ${names.length} variant(s) answered.`;
  lastRun = { cards, texts, names };
  showDiff();
}

async function generate(name, mode, prompt, node, signal) {
  const output = node.querySelector(".output");
  const body = { model: name, stream: true, stream_options: { include_usage: true }, ...settings() };
  const path = mode === "chat" ? "/v1/chat/completions" : "/v1/completions";
  if (mode === "chat") body.messages = [{ role: "user", content: prompt }];
  else body.prompt = prompt;
  const started = performance.now();
  let ttft = null;
  let text = "";
  let tokens = null;
  try {
    await stream(path, body, (event) => {
      if (event.usage) tokens = event.usage.completion_tokens;
      for (const choice of event.choices || []) {
        const piece = mode === "chat" ? (choice.delta && choice.delta.content) || "" : choice.text || "";
        if (!piece) continue;
        if (ttft === null) {
          ttft = (performance.now() - started) / 1000;
          setStat(node, "ttft", seconds(ttft));
        }
        text += piece;
        output.append(piece);
      }
    }, signal);
  } catch (err) {
    const error = node.querySelector(".card-error");
    error.hidden = false;
    error.textContent = err instanceof ApiError ? err.message : `streaming failed: ${err.message}`;
    output.setAttribute("aria-busy", "false");
    for (const key of ["tokens", "ttft", "latency", "toxicity"]) setStat(node, key, "–");
    return { ok: false, text };
  }
  const latency = (performance.now() - started) / 1000;
  output.setAttribute("aria-busy", "false");
  if (!text) output.append(el("em", { text: "(empty output)" }));
  setStat(node, "tokens", tokens === null ? "–" : String(tokens));
  setStat(node, "latency", seconds(latency));
  if (ttft === null) setStat(node, "ttft", "–");
  return { ok: true, text };
}

async function score(cards, outcomes) {
  const answered = outcomes.map((o, k) => [o, k]).filter(([o]) => o.ok);
  if (answered.length === 0) return;
  let result;
  try {
    result = await postJson("/ui/api/toxicity", { texts: answered.map(([o]) => o.text) });
  } catch (err) {
    for (const [, k] of answered) setStat(cards[k], "toxicity", "unavailable", err.message);
    return;
  }
  answered.forEach(([, k], j) => {
    if (result.scores === null) {
      setStat(cards[k], "toxicity", "off", "the server runs without toxicity scoring");
      return;
    }
    const value = result.scores[j];
    const toxic = value >= result.threshold;
    setStat(cards[k], "toxicity", `${number(value)}${toxic ? " (toxic)" : ""}`,
      `probability of toxic text; toxic at ≥ ${result.threshold}`);
    cards[k].classList.toggle("toxic", toxic);
  });
}

function showDiff() {
  if (!lastRun) return;
  const { cards, texts, names } = lastRun;
  const outputs = cards.map((c) => c.querySelector(".output"));
  const wanted = $("show-diff").checked && texts.length > 1;
  const diff = wanted ? differing(texts) : null;
  texts.forEach((text, k) => {
    if (!text) return;
    if (diff) render(outputs[k], diff.parts[k], diff.result[k]);
    else outputs[k].textContent = text;
  });
  const legend = $("diff-legend");
  legend.hidden = !diff;
  if (diff) {
    legend.replaceChildren("Highlighted: words of each output that differ from ",
      el("strong", { text: names[0] }), ", and words of ", el("strong", { text: names[0] }),
      " missing from another output.");
  }
}
