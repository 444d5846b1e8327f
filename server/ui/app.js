// Entry point: the API key, view switching (#compare, #experiments, #artifacts[/name]).

import { ApiError, getJson, setKey } from "./api.js";
import { loadArtifacts, showArtifact } from "./artifacts.js";
import { initCompare, setVariants } from "./compare.js";
import { initExperiments, watchExperiments } from "./experiments.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["compare", "experiments", "artifacts"];
const KEY_STORAGE = "excise-api-key";
let connected = false;

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function explain(err, key) {
  if (err instanceof ApiError && err.status === 401) {
    const what = key ? "The server refused this API key" : "This server needs an API key";
    return `${what}: ${err.message}. Enter a valid key above and press Connect.`;
  }
  if (err instanceof ApiError && err.status === 0) return `No connection: ${err.message}`;
  return `The server answered with an error: ${err.message}`;
}

async function connect(key) {
  setKey(key);
  $("connection").textContent = "Connecting…";
  let models;
  try {
    models = await getJson("/v1/models");
  } catch (err) {
    connected = false;
    sessionStorage.removeItem(KEY_STORAGE);
    $("connection").textContent = "Not connected.";
    setVariants([]);
    showError(explain(err, key));
    return;
  }
  connected = true;
  sessionStorage.setItem(KEY_STORAGE, key);
  showError("");
  const variants = models.data.filter((m) => m.kind === "variant").map((m) => m.id);
  const experiments = models.data.filter((m) => m.kind === "experiment").length;
  $("connection").textContent = `Connected: ${variants.length} variant(s), ${experiments} experiment(s).`;
  setVariants(variants);
  try {
    await loadArtifacts();
  } catch (err) {
    showError(explain(err, key));
  }
  route();
}

function route() {
  const [view, ...rest] = location.hash.slice(1).split("/");
  const current = VIEWS.includes(view) ? view : "compare";
  for (const name of VIEWS) {
    $(`view-${name}`).hidden = name !== current;
    const link = document.querySelector(`.tabs a[data-view="${name}"]`);
    if (name === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  watchExperiments(connected && current === "experiments");
  if (current === "artifacts" && rest.length) showArtifact(decodeURIComponent(rest.join("/")));
}

function init() {
  initCompare();
  initExperiments();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connect($("api-key").value.trim());
  });
  window.addEventListener("hashchange", route);
  route();
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved !== null) {
    $("api-key").value = saved;
    connect(saved);
  } else {
    $("api-key").focus();
  }
}

init();
