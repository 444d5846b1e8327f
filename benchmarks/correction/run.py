"""Targeted correction on SmolLM2 by the full protocol: lrp and its variants vs gradient, wanda,
activation, an AurA-style dampening and K random neurons, every method under the same references.

Protocol (excise/correction/protocol.py): the undesired reference is every toxic (looping) continuation
the dense model samples for the *reference* prompts; each method's budget K is chosen on the
*validation* prompts and validation perplexity windows (largest reduction within the perplexity
bound); its figures are reported on the *test* prompts (RealToxicityPrompts: 25 samples, top-p 0.9,
temperature 1, 20 tokens, seeded) and the test windows (wiki 64 x 512, news 16 x 512), with 95 %
intervals and a paired McNemar test against dense on the same prompts. Generation runs through one
vLLM engine per call, each variant its weights swapped into it (excise/evaluation/generation.py: why not LoRA).

Resumable: every stage writes its result under --work and is skipped when present; with
--max-minutes the run stops (exit 3) before a stage that would start after that many minutes,
so it can run in chunks (each under `flock /tmp/excise-cpu.lock`). Writes
benchmarks/results/correction.{md,json} and correction_*.png from the stored stages.

The full run takes 8-9 hours on 2 cores, more than one working session on a fresh machine, so the
stages live in the repository (`benchmarks/results/correction_stages/`, small JSON: the reference
texts, each ranking's edits and each stage's per-prompt figures) and a run on another machine goes on
where the last one stopped. Each stage file records the settings it was computed with (a stage whose
settings differ from this run's is computed again) and the commit, machine and date that computed it;
the report lists them.

    python benchmarks/correction/run.py [--quick] [--max-minutes 14]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from report import write_report  # noqa: E402

from benchmarks.results_files import commit, machine  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
QUICK = {"max_prompts": 5, "validation_samples": 1, "test_samples": 2, "reference_samples": 4, "budgets": "10,20",
         "repetition_budgets": "10", "general": "wiki:4x64", "evaluation": "wiki:2x128", "validation_windows": 2,
         "second": "news:2x128", "methods": "lrp,aura,random", "behaviours": "toxicity,repetition"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--methods", default="lrp,lrp-token,lrp-overall,lrp-harmless,lrp-margin,lrp-margin-harmless,lrp-margin-dampened,lrp-margin-onset,lrp-margin-onset-harmless,gradient,gradient-onset,wanda,wanda-onset,wanda-onset-harmless,activation,activation-onset,activation-onset-harmless,aura,random")
    parser.add_argument("--budgets", default="25,50,100", help="MLP neurons (SmolLM2: 46,080; 0.5%% = 230)")
    parser.add_argument("--repetition-budgets", default="20,50")
    parser.add_argument("--behaviours", default="toxicity,repetition")
    parser.add_argument("--validation-samples", type=int, default=10, help="samples per validation prompt")
    parser.add_argument("--test-samples", type=int, default=25, help="samples per test prompt (the protocol's k)")
    parser.add_argument("--reference-samples", type=int, default=10, help="samples per reference prompt")
    parser.add_argument("--max-prompts", type=int, default=None)
    parser.add_argument("--general", default="wiki:32x128")
    parser.add_argument("--evaluation", default="wiki:64x512")
    parser.add_argument("--validation-windows", type=int, default=16)
    parser.add_argument("--second", default="news:16x512")
    parser.add_argument("--ppl-bound", type=float, default=0.01)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--test-group", type=int, default=1, help="variants per test-stage engine call")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few prompts, samples and budgets")
    parser.add_argument("--work", type=Path, default=None,
                        help="stage results (default: benchmarks/results/correction_stages; --quick: ~/.cache/excise/bench/correction-quick)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop before a stage starting after this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the stages done so far (methods without a test stage: validation only)")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for flag in ("budgets", "repetition_budgets"):
        budgets = [int(k) for k in getattr(args, flag).split(",")]
        if max(budgets) > RANKED or min(budgets) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must lie in 1..{RANKED} (what a ranking stage stores)")
    return args


#: a ranking stage stores the first this many neurons of its order (each method's edits are nested in
#: the budget, so any budget up to this is measured without ranking again)
RANKED = 1000
#: the arguments each kind of stage depends on (its name carries behaviour, method and budgets), so that
#: new budgets measure only the new variants: neither the references, the rankings nor dense again
REFERENCE = frozenset({"model", "reference_samples", "max_prompts", "backend", "quick"})
RANKING = REFERENCE | {"general", "ranked"}  # "ranked": what a ranking stage stores (see RANKED)
DENSE = frozenset({"model", "validation_samples", "max_prompts", "evaluation", "validation_windows", "backend", "quick"})
VALIDATION = REFERENCE | {"general"} | DENSE  # a method's variants, each named by its budget
TEST = REFERENCE | {"general", "test_samples", "evaluation", "second"}  # the chosen budget is in the name


class Stages:
    """Stage results as JSON files under `work`, computed once for the same settings."""

    def __init__(self, work: Path, settings: dict, max_minutes: float | None, report_only: bool = False):
        self.work, self.max_minutes, self.started, self.report_only = work, max_minutes, time.time(), report_only
        self.settings = settings
        self.provenance: dict[str, dict] = {}  # stage -> who computed it (for the report)
        work.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.work / f"{name.replace('/', '__')}.json"

    def get(self, name: str, compute, depends: frozenset[str], compute_missing: bool = True):
        """The stage's stored value when it was computed with the same `depends` settings, else
        `compute()` (None without computing when `compute_missing` is False)."""
        path = self.path(name)
        settings = {key: self.settings[key] for key in sorted(depends)}
        if path.is_file():
            stored = json.loads(path.read_text())
            if {key: stored["settings"].get(key) for key in settings} == settings:
                self.provenance[name] = stored["computed"]
                return stored["value"]
            if not self.report_only and compute_missing:
                logging.getLogger("benchmark").info("stage %s was computed with other settings; computing it again", name)
        if self.report_only or not compute_missing:
            return None
        if self.max_minutes is not None and (time.time() - self.started) / 60 > self.max_minutes:
            logging.getLogger("benchmark").info("stopping before stage %s; run again to resume", name)
            sys.exit(3)
        started = time.time()
        value = compute()
        computed = {"commit": commit(), "machine": machine(with_torch=False),
                    "date": time.strftime("%Y-%m-%d", time.gmtime()), "seconds": round(time.time() - started, 1)}
        self.provenance[name] = computed
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": settings, "computed": computed, "value": value}))
        tmp.replace(path)
        return value

    def stored_parts(self, name: str, keys: list[str], depends: frozenset[str]) -> tuple[list[tuple[str, dict]], list[str]]:
        """Of the variants `keys` of the stage family `name`, those stored by earlier runs (in `name`
        or `name@<budgets>`) with the same `depends` settings, as `(stage, value)` parts, and the
        keys still missing (to measure in one more stage, `name@<their budgets>`)."""
        path = self.path(name)
        files = sorted(path.parent.glob(path.stem + ".json")) + sorted(path.parent.glob(path.stem + "@*.json"))
        parts, found = [], set()
        for file in files:
            stage = name + file.stem[len(path.stem):]
            value = self.get(stage, lambda: None, depends, compute_missing=False)
            if value is not None and set(value["variants"]) & (set(keys) - found):
                parts.append((stage, value))
                found |= set(value["variants"])
        return parts, [key for key in keys if key not in found]


def measurement(result, split) -> dict:
    m = result.behaviour[split]
    return {"metrics": m.metrics, "shows": list(m.shows), "values": list(m.values)}


def run_behaviour(name: str, args, stages: Stages) -> dict:
    from excise.behaviours import EvaluationSettings, UndesiredText, get_behaviour
    from excise.correction.run import CorrectConfig, build_references, reference_texts
    from excise.correction.methods import METHODS, rank
    from excise.errors import ExciseError
    from excise.evaluation.variants import VariantEvaluator
    from excise.models.adapters import get_adapter
    from excise.evaluation.neuron_scales import NeuronScales
    from excise.models.loading import load_model
    from excise.correction.protocol import measure_variants, split_prompts

    behaviour = get_behaviour(name)
    budgets = [int(k) for k in (args.budgets if name == "toxicity" else args.repetition_budgets).split(",")]
    methods = args.methods.split(",")
    base = EvaluationSettings(samples=args.validation_samples, reference_samples=args.reference_samples,
                              max_prompts=args.max_prompts)
    config = CorrectConfig(model=args.model, behaviour=name, general=args.general, evaluation=args.evaluation,
                           validation_windows=args.validation_windows, second_evaluation=args.second,
                           settings=base, backend=args.backend)
    loaded = load_model(args.model)
    widths = {layer.index: layer.mlp.num_neurons for layer in get_adapter(loaded.model).layers()}
    evaluator = VariantEvaluator(loaded, args.backend)

    def generate_references():
        started = time.perf_counter()
        texts = reference_texts(config, behaviour, evaluator, split_prompts(behaviour, base)["reference"])
        return {"texts": [[[t.prompt, t.continuation] for t in part] for part in texts],
                "seconds": time.perf_counter() - started,
                "generation": {"backend": evaluator.report["calls"][-1]["backend"],
                               "fallbacks": list(evaluator.report["fallbacks"])}}

    stored = stages.get(f"{name}/reference", generate_references, REFERENCE)
    if stored is None:  # --report-only before this behaviour's reference stage ran
        return None
    texts = tuple([UndesiredText(*pair) for pair in part] for part in stored["texts"])
    references = build_references(config, loaded, behaviour, evaluator, texts)
    data = references.protocol

    def ranking(method):
        try:
            r = rank(METHODS[method], config, loaded.model, references)
        except ExciseError as error:  # e.g. AurA without harmless texts: reported, not measured
            return {"error": str(error)}
        return {"order": [list(entry) for entry in r.order[:RANKED]], "seconds": r.seconds}

    def measured(variants, split, settings, windows):
        results = measure_variants(evaluator, behaviour, variants, data, settings, splits=(split,), window_sets=windows)
        return {"variants": {key: {"behaviour": measurement(r, split), "perplexity": r.perplexity, "seconds": r.seconds}
                             for key, r in results.items()},
                "generation": {"backend": evaluator.report["calls"][-1]["backend"],
                               "fallbacks": list(evaluator.report["fallbacks"])}}

    def stage(key: str, variants: dict, split: str, settings, windows, depends) -> dict:
        """One engine call per stage (a chunk of the run stays short and resumable)."""
        return stages.get(f"{name}/{split}/{key}", lambda: measured(variants(), split, settings, windows), depends)

    rankings = {}

    def ranked(m):
        """The method's ranking, computed when first needed (None: --report-only and not stored)."""
        if m not in rankings:
            rankings[m] = stages.get(f"{name}/{m}/ranking", lambda: ranking(m), RANKING)
        return rankings[m]

    def edit(m, k):
        return NeuronScales.edited(widths, ranked(m)["order"][:k])

    def stored_ranking(m):
        """The method's ranking if this run computed it or a stage holds it (never computes)."""
        return rankings.get(m) or stages.get(f"{name}/{m}/ranking", lambda: None, RANKING, compute_missing=False)

    test_settings = base.model_copy(update={"samples": args.test_samples})
    # validation: one engine call for dense, then one per method (the budgets not measured yet), so each
    # chunk of the run is one stage of minutes on 2 cores, not one hour-long call for the whole sweep; each
    # method ranks right before its validation stage, so a chunked run completes one method after another
    dense = stage("dense", lambda: {"dense": None}, "validation", base, ("validation",), DENSE)
    if dense is None:  # --report-only before any validation stage ran
        raise SystemExit(f"{name}: no validation stage measured yet; run the benchmark first")
    validation_stages = {f"{name}/validation/dense": dense}
    failed, pending, unmeasured = {}, [], {}
    for m in methods:
        # a method's variants may come from several stages (budgets added later); rank only to measure more
        parts, missing = stages.stored_parts(f"{name}/validation/{m}", [f"{m}/K={k}" for k in budgets], VALIDATION)
        if missing:
            if ranked(m) is not None and "error" in ranked(m):
                failed[m] = ranked(m)["error"]
                continue
            todo = [k for k in budgets if f"{m}/K={k}" in missing]
            key = f"{m}@{','.join(map(str, todo))}"
            part = None if ranked(m) is None else stage(
                key, lambda m=m, todo=todo: {f"{m}/K={k}": edit(m, k) for k in todo},
                "validation", base, ("validation",), VALIDATION)
            if part is None:  # --report-only: the method's budgets measured so far, if any
                unmeasured[m] = todo
                if not parts:
                    pending.append(m)
                    continue
            else:
                parts.append((f"{name}/validation/{key}", part))
        validation_stages |= dict(parts)
    methods = [m for m in methods if m not in failed and m not in pending]
    validated = {"variants": {key: v for part in validation_stages.values() for key, v in part["variants"].items()}}
    val = validated["variants"]["dense"]
    dense_ppl, before = val["perplexity"]["validation"], val["behaviour"]["metrics"][behaviour.primary]
    out = {"dense": {"validation": val}, "methods": {}, "budgets": budgets,
           "references": {**references.undesired_summary(), "harmless_texts": sum(len(b) for b in references.harmless),
                          "seconds": stored["seconds"]},
           "prompts": {split: len(texts) for split, texts in data.prompts.items()}, "failed": failed,
           "pending": pending, "unmeasured": {m: ks for m, ks in unmeasured.items() if m not in pending}}
    chosen = {}
    for m in methods:
        measured_budgets = [k for k in budgets if k not in unmeasured.get(m, [])]
        entry = {f"K={k}": validated["variants"][f"{m}/K={k}"] for k in measured_budgets} | {"scoring_seconds": (stored_ranking(m) or {}).get("seconds")}
        allowed = [k for k in measured_budgets if entry[f"K={k}"]["perplexity"]["validation"] / dense_ppl - 1 <= args.ppl_bound]

        def reduction(k, entry=entry):
            return 1 - entry[f"K={k}"]["behaviour"]["metrics"][behaviour.primary] / before if before else 0.0

        chosen[m] = max(allowed, key=lambda k: (reduction(k), -k)) if allowed else min(measured_budgets)
        out["methods"][m] = {"validation": entry, "help": METHODS[m].help,
                             "chosen": {"budget": chosen[m], "within_bound": bool(allowed)}}
    # test: dense and each method at its chosen budget, --test-group variants per engine call (one chunk each);
    # a method with no budget within the perplexity bound on validation cannot meet the target, so it is not
    # taken to the test split (about 17 minutes a variant on 2 cores)
    names = ["dense", *[m for m in methods if out["methods"][m]["chosen"]["within_bound"]]]
    groups = [names[i : i + args.test_group] for i in range(0, len(names), args.test_group)]
    generation = {"reference": stored["generation"]} | {f"validation {key.split('/validation/')[1]}": part["generation"]
                                                         for key, part in validation_stages.items()}
    tested = {}
    for group in groups:
        key = "+".join(n if n == "dense" else f"{n}@{chosen[n]}" for n in group)
        result = stage(key, lambda group=group: {n: None if n == "dense" else edit(n, chosen[n]) for n in group},
                       "test", test_settings, ("test", "news"), TEST)
        if result is not None:  # None: --report-only before this stage ran
            tested |= result["variants"]
            generation[f"test {key}"] = result["generation"]
    out["dense"]["test"] = tested.get("dense")
    for m in methods:
        out["methods"][m]["test"] = tested.get(m) if "dense" in tested else None
    out["generation"] = generation
    # how many of the K neurons each pair of methods edits are the same (methods with a stored ranking)
    orders = {m: [tuple(e[:2]) for e in r["order"]] for m in methods if (r := stored_ranking(m))}
    k = max(budgets)
    out["overlap"] = {"budget": k, "shared": {a: {b: len(set(orders[a][:k]) & set(orders[b][:k])) for b in orders}
                                                for a in orders}}
    return out


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (the report names no one's checkout)."""
    root = RESULTS.parents[1]
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    # the command that computes the stages (--report-only only rewrites the report from them)
    command = "python benchmarks/correction/run.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    work = args.work or (Path("~/.cache/excise/bench/correction-quick").expanduser() if args.quick
                         else RESULTS / "correction_stages")
    stages = Stages(work, vars(args) | {"ranked": RANKED}, args.max_minutes, args.report_only)
    results = {name: run_behaviour(name, args, stages) for name in args.behaviours.split(",")}
    results = {name: result for name, result in results.items() if result is not None}
    if not results:
        raise SystemExit(f"no stage computed yet under {work}; run the benchmark first")
    out = args.out / "quick" if args.quick else args.out
    write_report(results, vars(args) | {"command": command, "work": _shown(work), "stages": stages.provenance}, out)


if __name__ == "__main__":
    main()
