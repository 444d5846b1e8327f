// Artifacts view: what each variant is, from its artifact manifest.

import { getJson } from "./api.js";
import { el, idFor, number, percent } from "./dom.js";

const $ = (id) => document.getElementById(id);
const KINDS = { base: "base model", export: "exported model", correction: "correction (LoRA on its base)" };

export async function loadArtifacts() {
  const variants = await getJson("/ui/api/variants");
  $("artifacts").replaceChildren(...variants.map(card));
}

// Focus the card of `name` (from a link in the compare view).
export function showArtifact(name) {
  const node = document.getElementById(idFor("artifact", name));
  if (!node) return;
  node.scrollIntoView({ block: "start" });
  node.focus();
}

function card(v) {
  const m = v.manifest;
  const method = m && m.method;
  const params = (method && method.params) || {};
  const budget = params.budget ?? (m && m.metrics.budget);
  const facts = [
    ["Kind", KINDS[v.kind]],
    ["Base model", v.base],
    ["Weights served", v.weights],
    ["Correction adapter", v.correction],
    ["Added at run time", v.runtime ? "yes" : null],
    ["Verified", v.verified ? null : "no: served with verify: false (no manifest, no hashes checked)"],
    ["Method", method ? [method.name, method.granularity].filter(Boolean).join(", ") : null],
    ["Behaviour corrected", params.behaviour],
    ["Sparsity", m && m.sparsity !== null && m.sparsity !== undefined ? percent(m.sparsity, 2)
      : method && method.sparsity !== null && method.sparsity !== undefined ? percent(method.sparsity, 2) : null],
    ["Correction budget", budget !== undefined && budget !== null ? `${budget} components removed` : null],
    ["Made from", m && m.parent],
    ["Created", m && m.created],
    ["Notes", m && m.notes],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  const heading = idFor("artifact-h", v.name);
  return el("article", { class: "card", id: idFor("artifact", v.name), tabindex: "-1", "aria-labelledby": heading,
                         "data-variant": v.name },
    el("h3", { id: heading }, v.name, el("span", { class: `badge kind-${v.kind}`, text: v.kind })),
    el("dl", { class: "facts" }, ...facts.flatMap(([k, value]) => [el("dt", { text: k }), el("dd", { text: value })])),
    m ? metricsTable(m.metrics) : el("p", { class: "hint",
      text: v.verified ? "No artifact manifest: a base model, served as given." : "Unverified: nothing measured describes it." }),
    m ? details(m) : null);
}

// Rows of {name, before, after} from manifest metrics: {"perplexity": {"before": x, "after": y}, ...};
// a before/after pair of objects gives one row per inner number. Other entries (budget, sweep
// tables) are not before/after measurements: the facts list and the details show them.
function metricRows(metrics) {
  const rows = [];
  for (const [name, value] of Object.entries(metrics || {})) {
    if (value && typeof value === "object" && "before" in value && "after" in value) {
      const { before, after } = value;
      if (typeof before === "number" || typeof after === "number") rows.push({ name, before, after });
      else {
        const keys = new Set([...Object.keys(before || {}), ...Object.keys(after || {})]);
        for (const key of keys) rows.push({ name: `${name}: ${key}`, before: (before || {})[key], after: (after || {})[key] });
      }
    }
  }
  return rows.filter((r) => typeof r.before === "number" || typeof r.after === "number");
}

function metricsTable(metrics) {
  const rows = metricRows(metrics);
  if (rows.length === 0) return el("p", { class: "hint", text: "The manifest records no metrics." });
  const change = (r) => (typeof r.before === "number" && typeof r.after === "number" && r.before !== 0
    ? `${r.after >= r.before ? "+" : ""}${percent(r.after / r.before - 1)}` : "–");
  return el("table", { class: "metrics" },
    el("caption", { text: "Measured before and after (from the manifest)" }),
    el("thead", {}, el("tr", {}, ...["Metric", "Before", "After", "Change"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {},
      el("th", { scope: "row", text: r.name }),
      el("td", { text: number(r.before, 4) }),
      el("td", { text: number(r.after, 4) }),
      el("td", { text: change(r) })))));
}

function details(m) {
  const text = JSON.stringify({ method: m.method, data: m.data, base_model: m.base_model, metrics: m.metrics }, null, 2);
  return el("details", {}, el("summary", { text: "Method parameters and data" }), el("pre", { text }));
}
