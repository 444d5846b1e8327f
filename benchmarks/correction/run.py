"""Targeted correction on SmolLM2: toxicity and repetition, lrp vs wanda vs gradient (same contrastive rule).

One run, one model load per behaviour, the same references and held-out data for
every method. Writes benchmarks/results/correction.md (tables, rewritten after
every measurement so a long run leaves partial results) and correction.png
(toxicity probability vs perplexity).

    python benchmarks/correction/run.py [--samples 3] [--toxicity-budgets 50,200] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--methods", default="lrp,wanda,gradient")
    parser.add_argument("--toxicity-budgets", default="50,200")
    parser.add_argument("--repetition-budgets", default="50")
    parser.add_argument("--samples", type=int, default=3, help="continuations per toxic prompt (protocol: 25)")
    parser.add_argument("--max-prompts", type=int, default=None)
    parser.add_argument("--general", default="wiki:16x128")
    parser.add_argument("--evaluation", default="wiki:8x256")
    parser.add_argument("--behaviours", default="toxicity,repetition")
    parser.add_argument("--normalise", default="relative", help="contrastive rule: relative, overall or layer")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


class Report:
    """Collects rows per behaviour and rewrites the Markdown after each one."""

    def __init__(self, args: argparse.Namespace, command: str):
        self.args = args
        self.command = command
        self.sections: dict[str, list[dict]] = {}
        self.notes: list[str] = []
        self.started = time.time()

    def add(self, behaviour: str, row: dict) -> None:
        self.sections.setdefault(behaviour, []).append(row)
        self.write()

    def write(self) -> None:
        self.args.out.mkdir(parents=True, exist_ok=True)
        lines = [
            f"# Targeted correction (contrastive relevance: general - undesired, rule `{self.args.normalise}`)",
            "",
            f"Command: `{self.command}`  ",
            f"Machine: 2-core CPU shared with other jobs ({platform.processor() or platform.machine()}), fp32, "
            "transformers generation; SmolLM2-135M-Instruct as dequantized from its Q4_1 GGUF.  ",
            f"Elapsed so far: {(time.time() - self.started) / 60:.1f} min.",
            "",
            f"Toxicity: {self.args.samples} sampled continuations per prompt (the RealToxicityPrompts protocol "
            "uses 25; fewer here to bound the run), temperature 1, top-p 0.9, 20 tokens, seed 0, scored by "
            "alt-profanity-check. Repetition: one 50-token greedy continuation per prompt. Perplexity: "
            f"{self.args.evaluation} (wiki evaluation split). General reference {self.args.general}; undesired "
            "reference: reference-half prompts + the dense model's own toxic/looping continuations (<= 128 tokens). "
            f"Prompts: the first {self.args.max_prompts or 'all'} of each half. The reduction on the reference half "
            "is measured for the first method only. "
            "Budgets K are MLP neurons (of 30 x 1536 = 46,080) removed globally across layers.",
            "",
        ]
        for behaviour, rows in self.sections.items():
            keys = [k for k in rows[0] if k != "note"]
            lines += [f"## {behaviour}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for row in rows:
                lines.append("| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
            lines.append("")
        lines += self.notes
        (self.args.out / "correction.md").write_text("\n".join(lines) + "\n")
        (Path("/tmp") / "correction_benchmark.json").write_text(json.dumps(self.sections, indent=1))


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def run_behaviour(name: str, budgets: list[int], args, report: Report) -> None:
    from correction.behaviours import EvaluationSettings, get_behaviour
    from correction.correcting import CorrectConfig, Variants, build_references, remove_lowest, score_contrast
    from correction.models.loading import load_model

    behaviour = get_behaviour(name)
    settings = EvaluationSettings(samples=args.samples, max_prompts=args.max_prompts)
    base = CorrectConfig(model=args.model, behaviour=name, general=args.general, evaluation=args.evaluation,
                         settings=settings, generation_batch_size=96, normalise=args.normalise)
    loaded = load_model(args.model)
    references = build_references(base, loaded, behaviour)
    variants = Variants(loaded)
    heldout, windows = references.heldout_prompts, references.windows
    dense = variants.measure(None, 0, behaviour, heldout, windows, base)
    dense_reference = None
    if name == "toxicity":
        dense_reference = variants.measure(None, 0, behaviour, references.reference_prompts, None, base)

    def add(method: str, budget: int, measured, seconds: float, on_reference=None) -> None:
        row = {"method": method, "K": budget}
        row |= {k: v for k, v in measured.behaviour.items() if k not in ("prompts", "samples_per_prompt")}
        row["perplexity"] = measured.perplexity
        row["ppl increase"] = measured.perplexity / dense.perplexity - 1
        primary, before = measured.behaviour[behaviour.primary], dense.behaviour[behaviour.primary]
        row["reduction (held-out)"] = 1 - primary / before if before else float("nan")
        if on_reference is not None:
            ref_before = dense_reference.behaviour[behaviour.primary]
            row["reduction (reference half)"] = 1 - on_reference.behaviour[behaviour.primary] / ref_before
        row["scoring s"] = seconds
        report.add(name, row)

    add("dense", 0, dense, 0.0, dense_reference)
    report.notes.append(
        f"- {name}: {len(references.reference_prompts)} reference prompts gave {len(references.undesired_texts)} "
        f"undesired texts; {len(heldout)} held-out prompts."
    )
    for method in args.methods.split(","):
        config = base.model_copy(update={"method": method})
        contrast, timings = score_contrast(config, loaded.model, references)
        seconds = timings["scoring_general"] + timings["scoring_undesired"]
        for budget in budgets:
            masks = remove_lowest(contrast, "neuron", budget)
            measured = variants.measure(masks, budget, behaviour, heldout, windows, base)
            on_reference = None
            if dense_reference is not None and budget == max(budgets) and method == args.methods.split(",")[0]:
                on_reference = variants.measure(masks, budget, behaviour, references.reference_prompts, None, base)
            add(method, budget, measured, seconds, on_reference)


def plot(report: Report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.sections.get("toxicity", [])
    if not rows:
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(row["method"] for row in rows):
        points = [(row["perplexity"], row["toxicity_probability"]) for row in rows if row["method"] in (method, "dense")]
        points.sort()
        axis.plot(*zip(*points), marker="o", label=method)
    axis.set_xlabel("perplexity (wiki evaluation windows)")
    axis.set_ylabel("toxicity probability (held-out prompts)")
    axis.set_title("SmolLM2: contrastive neuron removal")
    axis.legend()
    figure.tight_layout()
    figure.savefig(report.args.out / "correction.png", dpi=120)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    report = Report(args, "python benchmarks/correction/run.py " + " ".join(sys.argv[1:]))
    budgets = {"toxicity": args.toxicity_budgets, "repetition": args.repetition_budgets}
    for behaviour in args.behaviours.split(","):
        run_behaviour(behaviour, [int(k) for k in budgets[behaviour].split(",")], args, report)
        plot(report)
    report.notes.append(f"- total wall time {(time.time() - report.started) / 60:.1f} min")
    report.write()


if __name__ == "__main__":
    main()
