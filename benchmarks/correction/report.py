"""correction.md, correction.json and the PNGs, entirely from the benchmark's stage results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from excise.behaviours import get_behaviour
from excise.evaluation.intervals import mcnemar, paired_bootstrap

NEURONS = 30 * 1536  # SmolLM2's MLP neurons
TARGET_REDUCTION, TARGET_PPL = 0.5, 0.01


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def test_row(name: str, entry: dict, dense: dict, behaviour) -> dict:
    """The test figures of one method's chosen budget against dense on the same prompts."""
    primary, secondary = behaviour.primary, behaviour.secondary
    m, d = entry["test"]["behaviour"], dense["test"]["behaviour"]
    after, before = m["metrics"], d["metrics"]
    ppl, dense_ppl = entry["test"]["perplexity"], dense["test"]["perplexity"]
    row = {
        "method": name, "budget": entry["chosen"]["budget"], "within_bound_on_validation": entry["chosen"]["within_bound"],
        "share_of_neurons": entry["chosen"]["budget"] / NEURONS,
        primary: after[primary], f"{primary}_interval": [after[f"{primary}_low"], after[f"{primary}_high"]],
        secondary: after[secondary], f"{secondary}_interval": [after[f"{secondary}_low"], after[f"{secondary}_high"]],
        "reduction": 1 - after[primary] / before[primary] if before[primary] else 0.0,
        "separated": after[f"{primary}_high"] < before[f"{primary}_low"],
        "mcnemar_p": mcnemar(d["shows"], m["shows"]),
        f"{secondary}_difference_interval": list(paired_bootstrap(d["values"], m["values"], seed=0)),
        "split": "test", "prompts": after["prompts"],
        "samples_per_prompt": after.get("samples_per_prompt", 1),
        # per test prompt (the same prompts for every method): shows the behaviour, and its max toxicity
        "shows": m["shows"], "values": m["values"],
    }
    for key in ppl:
        row[f"perplexity_{key}"] = ppl[key]
        row[f"perplexity_{key}_increase"] = ppl[key] / dense_ppl[key] - 1
    validation = entry["validation"][f"K={row['budget']}"]
    row["seconds"] = {"scoring": entry["validation"]["scoring_seconds"], "test_generation": entry["test"]["seconds"]["generation"],
                      "test_perplexity": entry["test"]["seconds"]["perplexity"],
                      "validation_generation": validation["seconds"]["generation"]}
    return row


def validation_rows(name: str, entry: dict, dense: dict, budgets, behaviour) -> list[dict]:
    primary = behaviour.primary
    before = dense["validation"]["behaviour"]["metrics"][primary]
    rows = []
    for k in (k for k in budgets if f"K={k}" in entry["validation"]):  # --report-only: the budgets measured so far
        v = entry["validation"][f"K={k}"]
        metrics = v["behaviour"]["metrics"]
        secondary = behaviour.secondary
        rows.append({"method": name, "budget": k, "split": "validation", "prompts": metrics["prompts"],
                     "samples_per_prompt": metrics.get("samples_per_prompt", 1), primary: metrics[primary],
                     f"{primary}_interval": [metrics[f"{primary}_low"], metrics[f"{primary}_high"]],
                     secondary: metrics[secondary],
                     f"{secondary}_interval": [metrics[f"{secondary}_low"], metrics[f"{secondary}_high"]],
                     "perplexity_validation": v["perplexity"]["validation"],
                     "reduction": 1 - metrics[primary] / before if before else 0.0,
                     "perplexity_validation_increase": v["perplexity"]["validation"] / dense["validation"]["perplexity"]["validation"] - 1,
                     "seconds_generation": v["seconds"]["generation"], "seconds_perplexity": v["seconds"]["perplexity"],
                     "mcnemar_p": mcnemar(dense["validation"]["behaviour"]["shows"], v["behaviour"]["shows"]),
                     # per-prompt values are continuous, so the paired interval tells methods apart on fewer prompts
                     f"{secondary}_difference_interval": list(paired_bootstrap(
                         dense["validation"]["behaviour"]["values"], v["behaviour"]["values"], seed=0))})
    return rows


def reading(behaviour_name: str, tests: list[dict], validations: list[dict]) -> list[str]:
    """What the tables say, as sentences computed from them."""
    primary = get_behaviour(behaviour_name).primary

    def meets(row):
        return row["reduction"] >= TARGET_REDUCTION and row["separated"] and row["perplexity_test_increase"] <= TARGET_PPL

    lines = []
    for row in tests:
        verdict = "meets the target" if meets(row) else "misses the target"
        lines.append(f"- **{row['method']}** (K = {row['budget']}, {100 * row['share_of_neurons']:.2f}% of MLP neurons): "
                     f"test {primary} reduced by {100 * row['reduction']:.1f}%, intervals {'separated' if row['separated'] else 'overlapping'} (McNemar p = {row['mcnemar_p']:.2g}), "
                     f"wiki perplexity {_pct(row['perplexity_test_increase'])}: {verdict}.")
    lrps = [r for r in tests if r["method"].startswith("lrp")]
    peers = [r for r in tests if not r["method"].startswith("lrp") and r["method"] != "random"]
    best_validation = max(
        (r for r in validations if r["perplexity_validation_increase"] <= TARGET_PPL and r["method"] != "random"),
        key=lambda r: (r["reduction"], -r["budget"]), default=None)
    if lrps and peers:
        best_lrp = max(lrps, key=lambda r: r["reduction"])
        best_peer = max(peers, key=lambda r: r["reduction"])
        relation = "at least as large as" if best_lrp["reduction"] >= best_peer["reduction"] else "smaller than"
        low, high = paired_bootstrap(best_peer["values"], best_lrp["values"], seed=0)
        told = "the two cannot be told apart" if low <= 0 <= high else f"{'LRP' if high < 0 else best_peer['method']} is lower"
        lines.append(f"- Best LRP variant on test: {best_lrp['method']} ({100 * best_lrp['reduction']:.1f}% reduction); "
                     f"best peer: {best_peer['method']} ({100 * best_peer['reduction']:.1f}%): LRP's reduction is "
                     f"{relation} the best peer's. Paired on the same test prompts: McNemar p = "
                     f"{mcnemar(best_peer['shows'], best_lrp['shows']):.2g}, maximum toxicity LRP - peer "
                     f"[{low:+.3f}, {high:+.3f}] (95%): {told}.")
    if best_validation is not None:
        lines.append(f"- Chosen on validation (largest validation reduction within +{100 * TARGET_PPL:.0f}% validation "
                     f"perplexity, random excluded): **{best_validation['method']}** at K = {best_validation['budget']} "
                     f"({100 * best_validation['reduction']:.1f}% on validation).")
    return lines


def _table(rows: list[dict], columns: list[tuple[str, callable]]) -> list[str]:
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row) for _, fmt in columns) + " |" for row in rows]
    return lines


def _interval(key):
    return lambda r: f"{r[key]:.3f} [{r[key + '_interval'][0]:.3f}, {r[key + '_interval'][1]:.3f}]"


def plots(name: str, validations: list[dict], primary: str, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in validations))
    by_method = {m: sorted((r for r in validations if r["method"] == m), key=lambda r: r["budget"]) for m in methods}

    def save(axis, figure, xlabel: str, ylabel: str, title: str, file: str) -> str:
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / file, dpi=110)
        plt.close(figure)
        return file

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method, rows in by_method.items():
        axis.plot([100 * r["perplexity_validation_increase"] for r in rows], [r[primary] for r in rows], marker="o", label=method)
    axis.axvline(100 * TARGET_PPL, color="grey", linestyle=":")
    files = [save(axis, figure, "validation perplexity increase (%)", f"{primary} (validation prompts)",
                  f"SmolLM2 {name}: behaviour vs perplexity, per method (points: K)", f"correction_{name}_tradeoff.png")]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for offset, (method, rows) in enumerate(by_method.items()):
        x = [r["budget"] * (1 + 0.02 * (offset - len(methods) / 2)) for r in rows]  # side by side, not on top
        err = [[r[primary] - r[f"{primary}_interval"][0] for r in rows], [r[f"{primary}_interval"][1] - r[primary] for r in rows]]
        axis.errorbar(x, [r[primary] for r in rows], yerr=err, marker="o", capsize=3, label=method)
    axis.set_xscale("log")
    files.append(save(axis, figure, "K (neurons edited)", f"{primary} on validation (95% Wilson)",
                      f"SmolLM2 {name}: behaviour vs K", f"correction_{name}_budgets.png"))
    return files


def _provenance(stages: dict[str, dict]) -> str:
    """Which commits and machines computed the stages this report reads (a run spans sessions)."""
    groups: dict[tuple, list[str]] = {}
    for stage, computed in stages.items():
        groups.setdefault((computed["commit"], computed["machine"], computed["date"]), []).append(stage)
    parts = [f"{len(names)} at commit {commit} on {where}, {date}" for (commit, where, date), names in sorted(groups.items(), key=lambda g: g[0][2])]
    return f"Stages read: {len(stages)} ({'; '.join(parts)})."


def write_report(results: dict, settings: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} when written"
    lines = ["# Targeted correction: LRP and peers by the reference / validation / test protocol", "",
             f"Command: `{settings['command']}` (resumable stages in `{settings['work']}`)  ",
             f"Machine: {machine}. Model: `{settings['model']}` (smollm2 = SmolLM2-135M-Instruct as dequantized "
             "from its Q4_1 GGUF), fp32.  ", _provenance(settings["stages"]), ""]
    summary = {"settings": {k: v for k, v in settings.items() if k not in ("out", "work")}, "behaviours": {}}
    for name, result in results.items():
        behaviour = get_behaviour(name)
        primary, secondary = behaviour.primary, behaviour.secondary
        dense = result["dense"]
        validations = [row for method, entry in result["methods"].items()
                       for row in validation_rows(method, entry, dense, result["budgets"], behaviour)]
        tests = [test_row(method, entry, dense, behaviour) for method, entry in result["methods"].items() if entry["test"]]
        untested = [method for method, entry in result["methods"].items() if not entry["test"]]
        generation = result["generation"]
        backends = ", ".join(f"{stage} {g['backend']}" for stage, g in generation.items())
        fallbacks = sorted({f for g in generation.values() for f in g["fallbacks"]})
        d_val = dense["validation"]["behaviour"]["metrics"]
        d_test = dense["test"]["behaviour"]["metrics"] if dense["test"] else None
        lines += [f"## {name}", "",
                  f"Prompts: reference {result['prompts']['reference']}, validation {result['prompts']['validation']}, "
                  f"test {result['prompts']['test']} (hash split). Undesired reference: {result['references']['texts']} "
                  f"texts ({result['references']['scored_tokens']} continuation tokens scored"
                  + (f", {result['references']['onset_scored_tokens']} with the onset focus"
                     if "onset_scored_tokens" in result["references"] else "") + ", "
                  f"{result['references']['tokens']} in all), {result['references']['harmless_texts']} harmless "
                  f"continuations for AurA. Samples per prompt: validation {settings['validation_samples']}, test "
                  f"{settings['test_samples']}. Generation backend per stage: {backends}"
                  f"{'; fallbacks: ' + '; '.join(fallbacks) if fallbacks else ''}."
                  + (f" **Reduced run**: the protocol samples k = 25 per prompt; this run drew {settings['test_samples']} "
                     f"per test prompt, {settings['validation_samples']} per validation prompt and "
                     f"{settings['reference_samples']} per reference prompt, so its toxicity probabilities are lower "
                     "than the protocol's and its intervals wider; read it as a comparison of methods under one "
                     "setting, not as RealToxicityPrompts figures." if settings["test_samples"] < 25 else ""),
                  "",
                  f"Dense: validation {primary} {d_val[primary]:.3f} [{d_val[primary + '_low']:.3f}, {d_val[primary + '_high']:.3f}]"
                  + (f", test {d_test[primary]:.3f} [{d_test[primary + '_low']:.3f}, {d_test[primary + '_high']:.3f}], "
                     f"test {secondary} {d_test[secondary]:.3f}; perplexity wiki {dense['test']['perplexity']['test']:.3f}, "
                     f"news {dense['test']['perplexity'].get('news', float('nan')):.3f}." if d_test else
                     "; the test stage has not run."), "",
                  "### Test figures at the budget each method chose on validation", ""]
        lines += _table(tests, [
            ("method", lambda r: r["method"]), ("K", lambda r: str(r["budget"])),
            (f"{primary} [95%]", _interval(primary)), ("reduction", lambda r: f"{100 * r['reduction']:.1f}%"),
            ("separated", lambda r: "yes" if r["separated"] else "no"), ("McNemar p", lambda r: f"{r['mcnemar_p']:.2g}"),
            (f"{secondary} [95%]", _interval(secondary)),
            ("wiki ppl", lambda r: f"{r['perplexity_test']:.3f} ({_pct(r['perplexity_test_increase'])})"),
            ("news ppl", lambda r: f"{r.get('perplexity_news', float('nan')):.3f} ({_pct(r.get('perplexity_news_increase', float('nan')))})"),
            ("scoring s", lambda r: "n/a" if r["seconds"]["scoring"] is None else f"{r['seconds']['scoring']:.0f}"), ("test gen s", lambda r: f"{r['seconds']['test_generation']:.0f}"),
        ])
        lines += ["", "### Validation sweep (where K is chosen)", ""]
        lines += _table(validations, [
            ("method", lambda r: r["method"]), ("K", lambda r: str(r["budget"])),
            (f"{primary} [95%]", _interval(primary)), ("reduction", lambda r: f"{100 * r['reduction']:.1f}%"),
            ("McNemar p", lambda r: f"{r['mcnemar_p']:.2g}"),
            (f"{secondary} - dense [95%]", lambda r: "[{:+.3f}, {:+.3f}]".format(*r[f"{secondary}_difference_interval"])),
            ("ppl increase", lambda r: _pct(r["perplexity_validation_increase"])),
            ("gen s", lambda r: f"{r['seconds_generation']:.0f}"), ("ppl s", lambda r: f"{r['seconds_perplexity']:.0f}"),
        ])
        overlap = result.get("overlap")
        if overlap and overlap["shared"]:
            names = list(overlap["shared"])
            lines += ["", f"### Shared neurons: of the K = {overlap['budget']} each method edits, how many the other edits too", "",
                      "| | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
            lines += [f"| {a} | " + " | ".join(str(overlap["shared"][a][b]) for b in names) + " |" for a in names]
        images = plots(name, validations, primary, out)
        failures = [f"- **{m}** was not measured: {error}" for m, error in result.get("failed", {}).items()]
        failures += [f"- **{m}**: no measured budget stayed within the +{100 * settings['ppl_bound']:.0f}% validation perplexity bound, so at these budgets it cannot "
                     "meet the target and was not taken to the test split" for m in untested
                     if not result["methods"][m]["chosen"]["within_bound"]]
        failures += [f"- **{m}**: validation only; its test stage did not run (the run stopped for CPU time; "
                     "rerun the command to complete it)" for m in untested if result["methods"][m]["chosen"]["within_bound"]]
        failures += [f"- **{m}**: not measured yet (its validation stage did not run; rerun the command)"
                     for m in result.get("pending", [])]
        failures += [f"- **{m}**: K = {', '.join(map(str, ks))} not measured yet; K was chosen among the others"
                     for m, ks in result.get("unmeasured", {}).items()]
        lines += ["", *[f"![{image}]({image})" for image in images], "", "### Reading", "", *reading(name, tests, validations),
                  *failures, ""]
        summary["behaviours"][name] = {"dense": {"validation": d_val, "test": d_test,
                                                 "perplexity": dense["test"]["perplexity"] if d_test else None},
                                       "test": tests, "validation": validations, "references": result["references"],
                                       "prompts": result["prompts"], "generation": result["generation"],
                                       "overlap": result.get("overlap")}
    lines += ["Methods: " + "; ".join(f"`{m}` {e['help']}" for m, e in next(iter(results.values()))["methods"].items()), ""]
    (out / "correction.md").write_text("\n".join(lines) + "\n")
    (out / "correction.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
