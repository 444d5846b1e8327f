"""The pruning benchmark's rows (`Variant`) and the measuring `Bench`: one loaded model, the same
reference, validation and evaluation windows for every row, scores cached in the work folder."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from excise.data.windows import DataSpec, token_windows
from excise.evaluation.perplexity import perplexity
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.pruning.reconstruction import SPARSEGPT, fixed_rules, reconstruct, saliency_rules
from excise.artifacts.scores import Scores
from excise.scoring import score_in_worker, score_model
from excise.selection import get_selection
from excise.tasks import evaluate_task, load_task, split_task

from benchmarks.results_files import commit

logger = logging.getLogger("benchmarks.pruning")

LEVELS = {"50%": ("row", 0.5), "60%": ("row", 0.6), "2:4": ("nm", 0.5)}
TIMED_METHODS = ("wanda", "gradient", "lrp")
DELTAS = (0.02, 0.05, 0.1, 0.2)
TOKEN_ABSOLUTE = {"aggregation": "token_absolute"}
TOKEN_SQUARED = {"aggregation": "token_squared"}


@dataclass(frozen=True)
class Variant:
    """One row: how the mask is chosen (a scorer with params, or sparsegpt) and what is done after."""

    label: str
    method: str
    params: dict = field(default_factory=dict)
    factor: int = 1  # reference windows, as a multiple of --calibration's count
    allocation: bool = False  # per-layer sparsity from the scores (delta chosen on validation)
    reconstruct: bool = False  # SparseGPT's update re-fits the kept weights of the method's mask
    levels: tuple[str, ...] = tuple(LEVELS)


#: the rows the target compares (peers and the main LRP rows): measured first, level by level
PRIMARY = 4


def variants(factor: int) -> list[Variant]:
    """The first PRIMARY rows run level by level, then the others row by row, so a run cut short
    keeps the comparison the issue asks for."""
    ta = TOKEN_ABSOLUTE
    return [
        Variant("wanda", "wanda"),
        Variant("sparsegpt", SPARSEGPT),
        Variant("lrp token-absolute", "lrp", ta),
        Variant("lrp token-absolute + reconstruction", "lrp", ta, reconstruct=True),
        Variant("lrp (paper aggregation)", "lrp", levels=("50%",)),
        Variant("magnitude", "magnitude", levels=("50%",)),
        Variant("lrp token-absolute + relevance allocation", "lrp", ta, allocation=True, levels=("50%", "60%")),
        Variant("wanda + reconstruction", "wanda", reconstruct=True, levels=("50%",)),
        # each token's share squared, as the layer's squared error weighs it (Wanda's L2 over tokens,
        # where token-absolute is L1): does LRP's mask improve when large shares count more?
        Variant("lrp token-squared", "lrp", TOKEN_SQUARED),
        Variant("lrp token-squared + reconstruction", "lrp", TOKEN_SQUARED, reconstruct=True),
        Variant(f"lrp token-absolute, {factor}x reference", "lrp", ta, factor=factor, levels=("50%",)),
        Variant(f"lrp token-absolute, {factor}x reference + reconstruction", "lrp", ta, factor=factor,
                reconstruct=True, levels=("50%",)),
        # LRP started at the next token's margin over the expected logit (the log-probability's gradient):
        # in correction it is what made LRP choose behaviour-specific neurons rather than shared ones
        Variant("lrp token-absolute, margin start", "lrp", ta | {"target": "next_token_margin"}, levels=("50%", "60%")),
        Variant("lrp token-absolute, margin start + reconstruction", "lrp", ta | {"target": "next_token_margin"},
                reconstruct=True, levels=("50%", "60%")),
    ]


class OutOfTime(Exception):
    """The run's --budget-minutes are spent; what is measured is saved and a rerun resumes."""


class Bench:
    def __init__(self, args: argparse.Namespace, state: dict, state_path: Path):
        self.args, self.state, self.state_path = args, state, state_path
        self.deadline = time.monotonic() + 60 * args.budget_minutes if args.budget_minutes else None
        self.loaded = load_model(args.model)
        self.model, tokenizer = self.loaded.model, self.loaded.tokenizer
        self.adapter = get_adapter(self.model)
        self.dense = {k: v.clone() for k, v in self.model.state_dict().items()}
        limit = self.model.config.max_position_embeddings
        base = DataSpec.parse(args.calibration, split="calibration", order="random", seed=args.seed)
        # one draw: its first count*factor windows are the reference sets, the next 8 the validation set
        self.draw_spec = base.model_copy(update={"count": base.count * args.factor + args.validation})
        draw = token_windows(tokenizer, self.draw_spec, max_length=limit)
        self.calibration_spec, self.reference = base, draw[: base.count * args.factor]
        self.validation = draw[base.count * args.factor :]
        self.evaluation = {
            name: (spec, token_windows(tokenizer, spec, max_length=limit))
            for name, spec in (
                ("wiki", DataSpec.parse(args.eval, split="evaluation", order="sequential")),
                ("news", DataSpec.parse(args.news, split="evaluation", order="sequential")),
            )
        }
        split = split_task(load_task("ioi"), tokenizer, reference=8, heldout=args.ioi, seed=args.seed)
        self.ioi = split.encode(tokenizer, "heldout")

    def save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state, indent=2))

    def windows(self, factor: int) -> torch.Tensor:
        return self.reference[: self.calibration_spec.count * factor]

    def reconstruction_windows(self) -> torch.Tensor:
        return self.windows(1)[: self.args.reconstruction_windows]

    def restore_dense(self) -> None:
        self.model.load_state_dict(self.dense)

    def measure_model(self) -> dict:
        started = time.perf_counter()
        out = {f"ppl_{name}": perplexity(self.model, windows).perplexity for name, (_, windows) in self.evaluation.items()}
        ioi = evaluate_task(self.model, self.ioi)
        out |= {"ioi_accuracy": ioi.accuracy, "ioi_logit_diff": ioi.logit_diff, "eval_s": time.perf_counter() - started}
        return out

    def scores(self, variant: Variant) -> tuple[Scores, dict]:
        """The variant's scores, cached in the work folder; a larger reference set is scored only on
        its new windows and averaged with the smaller one (scores are means over samples)."""
        key = json.dumps({"method": variant.method, "params": variant.params, "factor": variant.factor}, sort_keys=True)
        folder = Path(self.args.work) / "scores" / hashlib.sha256(key.encode()).hexdigest()[:16]
        info_path = folder / "info.json"
        if info_path.is_file() and json.loads(info_path.read_text())["key"] == key:
            return Scores.load(folder), json.loads(info_path.read_text())
        base_count = self.calibration_spec.count
        if variant.factor == 1:
            chunks = [self.windows(1)]
            previous, seconds, peak = None, 0.0, 0.0
        else:
            previous, prev_info = self.scores(Variant(variant.label, variant.method, variant.params))
            chunks, seconds, peak = [self.windows(variant.factor)[base_count:]], prev_info["scoring_s"], prev_info["peak_rss_mb"]
        result = score_in_worker(self.args.model, chunks[0], variant.method, granularities={"weight"}, **variant.params)
        scores = result.scores
        if previous is not None:
            new = len(chunks[0])
            scores = Scores(weights={n: (base_count * previous.weights[n] + new * s) / (base_count + new)
                                     for n, s in scores.weights.items()})
        info = {"key": key, "scoring_s": seconds + result.wall_seconds,
                "peak_rss_mb": max(peak, result.peak_rss_bytes / 2**20), "samples": len(self.windows(variant.factor))}
        folder.mkdir(parents=True, exist_ok=True)
        scores.save(folder)
        info_path.write_text(json.dumps(info))
        return scores, info

    def choose_delta(self, scores: Scores) -> dict:
        """The allocation's delta with the lowest perplexity on the validation windows at 50%."""
        found = {}
        for delta in DELTAS:
            self.restore_dense()
            params = {"allocation": "relevance", "delta": delta}
            get_selection("row")(scores, self.adapter, 0.5, params).apply(self.adapter)
            found[str(delta)] = perplexity(self.model, self.validation).perplexity
            logger.info("allocation delta %.2f: validation perplexity %.3f", delta, found[str(delta)])
        return {"validation_ppl": found, "chosen": float(min(found, key=found.get))}

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OutOfTime

    def run(self, variant: Variant, levels: tuple[str, ...] | None = None) -> None:
        row = self.state["rows"].setdefault(variant.label, {"method": variant.method, "params": variant.params,
                                                             "factor": variant.factor, "levels": {}})
        todo = [level for level in (levels or variant.levels) if level in variant.levels and level not in row["levels"]]
        if not todo:
            return
        self.check_deadline()  # before scoring too: a larger reference set scores for many minutes
        scores, info = (None, {"scoring_s": 0.0, "peak_rss_mb": None, "samples": len(self.reconstruction_windows())})
        if variant.method != SPARSEGPT:
            scores, info = self.scores(variant)
        row |= {"scoring_s": info["scoring_s"], "peak_rss_mb": info["peak_rss_mb"], "samples": info["samples"]}
        selection_params = {}
        if variant.allocation:
            row.setdefault("allocation", self.choose_delta(scores))
            selection_params = {"allocation": "relevance", "delta": row["allocation"]["chosen"]}
        for level in todo:
            self.check_deadline()
            granularity, sparsity = LEVELS[level]
            self.restore_dense()
            started = time.perf_counter()
            if variant.method == SPARSEGPT:
                rules = saliency_rules(granularity, sparsity)
                masks = reconstruct(self.model, self.reconstruction_windows(), rules, batch_size=8).masks
            else:
                params = selection_params if granularity == "row" else {}
                masks = get_selection(granularity)(scores, self.adapter, sparsity, params)
                if variant.reconstruct:
                    reconstruct(self.model, self.reconstruction_windows(), fixed_rules(masks), batch_size=8)
            masks.apply(self.adapter)
            measured = {"prune_s": time.perf_counter() - started, "sparsity": masks.sparsity_report(self.adapter)["overall"]}
            measured |= self.measure_model()
            logger.info("%s at %s: %s", variant.label, level, {k: round(v, 3) for k, v in measured.items()})
            row["levels"][level] = measured | {"commit": commit()}
            self.save()

    def cost_per_token(self) -> dict[str, float]:
        """Seconds per reference token of a plain forward+backward and of each data-driven method,
        side by side in this process: the same windows, one warm-up round, the median of the rest."""
        self.restore_dense()
        windows, model = self.windows(1)[: self.args.timing_windows], self.model

        def forward_backward() -> None:
            for window in windows:
                model(input_ids=window[None], labels=window[None]).loss.backward()
                model.zero_grad(set_to_none=True)

        runs = {"forward+backward": forward_backward}
        for method in TIMED_METHODS:
            runs[method] = lambda method=method: score_model(model, windows, method, progress=False)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(self.args.timing_repeats + 1):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                if round_:
                    seconds[name].append(time.perf_counter() - started)
        return {name: statistics.median(times) / windows.numel() for name, times in seconds.items()}
