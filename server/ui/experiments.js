// Experiments view: every A/B experiment's arms and tests, refreshed live.

import { getJson } from "./api.js";
import { barChart } from "./charts.js";
import { el, idFor, number, percent, seconds } from "./dom.js";

const $ = (id) => document.getElementById(id);
const PERIOD_MS = 3000;
const Z95 = 1.959964;
let timer = null;
let active = false;

// 95% Wilson score interval of a proportion of k successes in n trials.
function wilson(k, n) {
  if (!n) return null;
  const p = k / n;
  const z2 = Z95 * Z95;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (Z95 * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

export function initExperiments() {
  $("live").addEventListener("change", schedule);
}

// Called when the view is shown or hidden, and after connecting.
export function watchExperiments(on) {
  active = on;
  if (on) refresh();
  else schedule();
}

function schedule() {
  clearTimeout(timer);
  timer = null;
  if (active && $("live").checked) timer = setTimeout(refresh, PERIOD_MS);
}

async function refresh() {
  try {
    const reports = await getJson("/v1/experiments");
    render(reports);
    $("experiments-status").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (err) {
    $("experiments-status").textContent = `Could not load the experiments: ${err.message}`;
  }
  schedule();
}

function render(reports) {
  const box = $("experiments");
  if (reports.length === 0) {
    box.replaceChildren(el("p", { class: "hint", text: "No experiment is configured on this server." }));
    return;
  }
  box.replaceChildren(...reports.map(experiment));
}

function experiment(report) {
  const heading = idFor("experiment", report.name);
  const arms = report.arms.map((arm) => ({ ...arm, ci: ci(arm) }));
  return el("article", { class: "experiment", "aria-labelledby": heading, "data-experiment": report.name },
    el("h3", { id: heading, text: `Experiment ${report.name}` }),
    armTable(report, arms),
    testTable(report),
    el("div", { class: "charts" }, ...charts(arms)));
}

function ci(arm) {
  if (arm.toxic_rate === null) return null;
  return wilson(Math.round(arm.toxic_rate * arm.scored), arm.scored);
}

function armTable(report, arms) {
  const head = ["Arm", "Weight", "Requests", "Latency p50", "Latency p95", "TTFT p50", "Scored",
    "Mean toxicity", "Toxic rate (95% Wilson CI)"];
  const rows = arms.map((arm, k) => el("tr", { "data-arm": arm.variant },
    el("th", { scope: "row" }, arm.variant, k === 0 ? el("span", { class: "badge", text: "control" }) : null),
    el("td", { text: percent(arm.weight, 0) }),
    el("td", { "data-field": "requests", text: String(arm.requests) }),
    el("td", { text: seconds(arm.latency_p50_s) }),
    el("td", { text: seconds(arm.latency_p95_s) }),
    el("td", { text: seconds(arm.ttft_p50_s) }),
    el("td", { text: String(arm.scored) }),
    el("td", { text: number(arm.mean_toxicity) }),
    el("td", { text: arm.ci ? `${percent(arm.toxic_rate)} (${percent(arm.ci[0])}–${percent(arm.ci[1])})` : "–" })));
  return el("table", { class: "arms" },
    el("caption", { text: `Arms of ${report.name}; the first is the control` }),
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows));
}

function testTable(report) {
  const tests = [...report.toxic_rate_tests, ...report.latency_tests];
  const rows = tests.map((t) => el("tr", {},
    el("td", { text: `${t.arms[1]} vs ${t.arms[0]}` }),
    el("td", { text: t.test }),
    el("td", { text: number(t.statistic) }),
    el("td", { text: t.p_value === null ? "not enough data" : number(t.p_value) }),
    el("td", { class: t.significant ? "significant" : "", text: t.significant ? "yes" : "no" })));
  return el("table", { class: "tests" },
    el("caption", { text: `Significance (two-sided, α = ${report.alpha})` }),
    el("thead", {}, el("tr", {}, ...["Comparison", "Test", "Statistic", "p-value", "Significant"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows));
}

function charts(arms) {
  const rows = (pick) => arms.map((a) => ({ label: a.variant, value: pick(a) }));
  const toxic = arms.map((a) => ({
    label: a.variant, value: a.toxic_rate, low: a.ci ? a.ci[0] : undefined, high: a.ci ? a.ci[1] : undefined,
  }));
  const figure = (title, chart) => el("figure", {}, el("figcaption", { text: title }), chart);
  return [
    figure("Requests", barChart("Requests", rows((a) => a.requests), (v) => String(v))),
    figure("Latency p50", barChart("Latency p50", rows((a) => a.latency_p50_s), seconds)),
    figure("Latency p95", barChart("Latency p95", rows((a) => a.latency_p95_s), seconds)),
    figure("TTFT p50", barChart("TTFT p50", rows((a) => a.ttft_p50_s), seconds)),
    figure("Toxic rate, 95% CI", barChart("Toxic rate with 95% confidence interval", toxic, (v) => percent(v))),
  ];
}
