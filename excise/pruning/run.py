"""`prune`: score a model, cut a mask at a sparsity, measure it, write a mask artifact.

The artifact is a folder written atomically (`excise.artifacts.atomic.atomic_folder`):
- `masks.safetensors`: the bit-packed `MaskSet` (True = kept);
- `scores.safetensors` (with `save_scores`): the raw scores, so other sparsities or
  granularities of the same unit can be cut later without scoring again (`from_scores`);
- `weights.safetensors` (kind `reconstruction`: method `sparsegpt`, or any scorer's mask
  with `reconstruct`): the kept weights as SparseGPT's OBS update re-fitted them;
- `manifest.json`: base model pinned by weight hash, method and parameters, data specs,
  the exact sparsity achieved per tensor, per layer and overall, perplexity before/after,
  timings and peak memory;
- `README.md`: a short card saying the same for people.

Everything the user can get wrong (settings, model folder, data sizes, an existing
`out`) is checked before the long scoring run starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from excise import scoring
from excise.artifacts.atomic import atomic_folder, write_json
from excise.data.windows import token_windows
from excise.errors import ExciseError
from excise.evaluation.perplexity import perplexity
from excise.home import excise_home
from excise.artifacts.manifest import BaseModelRef, Manifest, MethodInfo
from excise.artifacts.masks import MaskSet
from excise.models.adapters import ModelAdapter, get_adapter
from excise.models.identity import base_model_ref
from excise.models.loading import LoadedModel, load_job_model
from excise.pruning.config import PruneConfig
from excise.pruning.reconstruction import SPARSEGPT, fixed_rules, reconstruct, saliency_rules
from excise.scoring.run import peak_rss_bytes
from excise.artifacts.scores import SCORES_FILE, Scores
from excise.selection import SELECTIONS
from excise.artifacts.updates import save_weights

logger = logging.getLogger(__name__)

README_NAME = "README.md"
#: bump when the perplexity protocol changes, so cached "before" values are not reused
PERPLEXITY_CACHE_VERSION = 1


@dataclass
class ScoredModel:
    """Scores plus how they were made (what a manifest needs to say about them)."""

    scores: Scores | None  # None for sparsegpt, which selects without scores
    method: str
    params: dict[str, Any]
    calibration: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    parent: str | None = None


def prune(config: PruneConfig, out: Path, *, force: bool = False) -> Path:
    """Score (or load scores), select, apply, evaluate and write the mask artifact to `out`."""
    out = Path(out)
    if out.exists() and not force:
        raise ExciseError(f"{out} already exists; choose another --out or pass --force to replace it")
    selection = SELECTIONS[config.granularity]
    selection.check(config.sparsity, config.selection_params)
    base = base_model_ref(config.model)  # refuses unknown architectures before anything loads
    saved = _load_saved_scores(config.from_scores, base) if config.from_scores else None
    if saved and config.method not in (None, saved.method):
        raise ExciseError(
            f"{config.from_scores} holds {saved.method} scores, not {config.method}; drop --method or score again"
        )
    torch.manual_seed(config.seed)
    loaded = load_job_model(config.model, config, "pruning")
    max_length = loaded.model.config.max_position_embeddings
    needs_calibration = saved is None or config.reconstructs
    calibration = token_windows(loaded.tokenizer, config.calibration, max_length=max_length) if needs_calibration else None
    evaluation = None
    if config.evaluation is not None:
        evaluation = token_windows(loaded.tokenizer, config.evaluation, max_length=max_length)

    timings: dict[str, float] = {}
    ppl_before = _cached_perplexity(loaded, base, config, evaluation, timings) if evaluation is not None else None
    adapter = get_adapter(loaded.model)
    updated = None
    if config.method == SPARSEGPT:
        scored, masks, updated = _sparsegpt(config, loaded, calibration)
    else:
        scored = saved or _score(config, loaded, calibration, selection.unit)
        started = time.perf_counter()
        masks = selection(scored.scores, adapter, config.sparsity, config.selection_params)
        timings["selection_s"] = time.perf_counter() - started
        if config.reconstruct:  # the mask stays; the kept weights are re-fitted (from the dense ones)
            started = time.perf_counter()
            rebuilt = reconstruct(loaded.model, calibration, fixed_rules(masks), config.reconstruction,
                                  batch_size=config.batch_size)
            updated, timings["reconstruction_s"] = rebuilt.weights, time.perf_counter() - started
    masks.apply(adapter)

    metrics: dict[str, Any] = {}
    if evaluation is not None:
        started = time.perf_counter()
        metrics["perplexity"] = {"before": ppl_before, "after": perplexity(loaded.model, evaluation).perplexity}
        timings["evaluation_after_s"] = time.perf_counter() - started
        logger.info("perplexity %(before).3f -> %(after).3f", metrics["perplexity"])
    manifest = _manifest(config, base, scored, sparsity_by_layer(masks, adapter), metrics, timings)
    with atomic_folder(out, force=force) as folder:
        masks.save(folder)
        if updated is not None:
            save_weights(updated, folder)
        if config.save_scores:
            scored.scores.save(folder)
        (folder / README_NAME).write_text(model_card(manifest, has_scores=config.save_scores, has_weights=updated is not None))
        manifest.save(folder)
    logger.info("wrote %s (sparsity %.4f overall)", out, manifest.sparsity["overall"])
    return out


def _manifest(
    config: PruneConfig,
    base: BaseModelRef,
    scored: ScoredModel,
    sparsity: dict[str, float],
    metrics: dict[str, Any],
    timings: dict[str, float],
) -> Manifest:
    params = {"scoring": scored.params, "selection": config.selection_params, "seed": config.seed}
    if config.reconstructs:
        params["reconstruction"] = config.reconstruction.model_dump()
    return Manifest(
        kind="reconstruction" if config.reconstructs else "mask",
        base_model=base,
        method=MethodInfo(name=scored.method, granularity=config.granularity, sparsity=config.sparsity, params=params),
        data={
            "calibration": scored.calibration,
            "evaluation": config.evaluation.model_dump() if config.evaluation else None,
        },
        sparsity=sparsity,
        metrics=metrics,
        timings=scored.timings | timings,
        resources=scored.resources,
        parent=scored.parent,
        config=config.model_dump(mode="json"),
    )


# ---- scoring ---------------------------------------------------------------------------------
def _score(config: PruneConfig, loaded: LoadedModel, windows: torch.Tensor, unit: str) -> ScoredModel:
    """Score in this process: lrp's class patches are undone when its session ends, before the
    pruned model is evaluated. The peak memory recorded is this process's up to the end of scoring."""
    result = scoring.score_model(
        loaded.model, windows, config.method, granularities={unit}, batch_size=config.batch_size,
        recompute=config.recompute, **config.params,
    )
    resources = {"peak_rss_mb": result.peak_rss_bytes / 2**20}
    if result.peak_cuda_bytes is not None:
        resources["peak_cuda_mb"] = result.peak_cuda_bytes / 2**20
    return ScoredModel(
        scores=result.scores,
        method=config.method,
        params=result.params
        | {
            "target": result.target,
            "granularities": result.granularities,
            "batch_size": config.batch_size,
            "samples": result.samples,
            "tokens": result.tokens,
        },
        calibration=config.calibration.model_dump(),
        timings={"scoring_s": result.wall_seconds},
        resources=resources,
    )


def _sparsegpt(config: PruneConfig, loaded: LoadedModel, windows: torch.Tensor) -> tuple[ScoredModel, MaskSet, dict]:
    """SparseGPT chooses the mask and re-fits the kept weights in one sequential pass."""
    started = time.perf_counter()
    rules = saliency_rules(config.granularity, config.sparsity, config.selection_params)
    result = reconstruct(loaded.model, windows, rules, config.reconstruction, batch_size=config.batch_size)
    scored = ScoredModel(
        scores=None,
        method=SPARSEGPT,
        params={"samples": len(windows), "tokens": windows.numel(), "batch_size": config.batch_size},
        calibration=config.calibration.model_dump(),
        timings={"reconstruction_s": time.perf_counter() - started},
        resources={"peak_rss_mb": peak_rss_bytes() / 2**20},
    )
    return scored, result.masks, result.weights


def _load_saved_scores(folder: Path, base: BaseModelRef) -> ScoredModel:
    manifest = Manifest.load(folder)
    if SCORES_FILE not in manifest.files:
        raise ExciseError(f"{folder} holds no saved scores; make it with `excise prune --save-scores`")
    if manifest.base_model.weights_sha256 != base.weights_sha256:
        raise ExciseError(
            f"{folder} was scored on another model ({manifest.base_model.spec}, weights "
            f"{manifest.base_model.weights_sha256[:12]}), not {base.spec} ({base.weights_sha256[:12]}); score again"
        )
    if manifest.method is None:
        raise ExciseError(f"{folder}/manifest.json names no method; the artifact is not a mask artifact")
    return ScoredModel(
        scores=Scores.load(folder),
        method=manifest.method.name,
        params=manifest.method.params.get("scoring", {}),
        calibration=manifest.data.get("calibration"),
        parent=str(Path(folder).resolve()),
    )


# ---- evaluation ------------------------------------------------------------------------------
def _cached_perplexity(
    loaded: LoadedModel, base: BaseModelRef, config: PruneConfig, windows: torch.Tensor, timings: dict[str, float]
) -> float:
    """Perplexity of the dense model, cached under excise_home by weights hash + evaluation spec."""
    key = json.dumps(
        {
            "weights": base.weights_sha256,
            "spec": config.evaluation.model_dump(),
            "device": config.device,
            "dtype": config.dtype,
            "device_map": config.device_map,
            "version": PERPLEXITY_CACHE_VERSION,
        },
        sort_keys=True,
    )
    path = excise_home() / "cache" / "perplexity" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    if path.is_file():
        logger.info("dense perplexity from cache %s", path)
        return json.loads(path.read_text())["perplexity"]
    started = time.perf_counter()
    value = perplexity(loaded.model, windows).perplexity
    timings["evaluation_before_s"] = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"perplexity": value, "key": json.loads(key)})
    return value


# ---- reporting -------------------------------------------------------------------------------
def sparsity_by_layer(masks: MaskSet, adapter: ModelAdapter) -> dict[str, float]:
    """Exact share removed: per weight tensor (by parameter name), per decoder layer (`layer.<i>`)
    over its prunable linears, and `overall` over all prunable linears."""
    report = masks.sparsity_report(adapter)
    weight_masks = masks.weight_masks(adapter)
    linears = adapter.prunable_linears()
    for index, layer_module in enumerate(adapter.layer_modules()):
        members = {id(m) for m in layer_module.modules()}
        removed = total = 0
        for name, module in linears.items():
            if id(module) in members:
                mask = weight_masks.get(f"{name}.weight")
                removed += 0 if mask is None else int((~mask).sum())
                total += module.weight.numel()
        report[f"layer.{index}"] = removed / total if total else 0.0
    return report


def model_card(manifest: Manifest, *, has_scores: bool, has_weights: bool = False) -> str:
    method = manifest.method
    ppl = manifest.metrics.get("perplexity")
    ppl_line = f"- Perplexity: {ppl['before']:.3f} dense -> {ppl['after']:.3f} pruned\n" if ppl else ""
    calibration = manifest.data.get("calibration") or {}
    layers = [v for k, v in manifest.sparsity.items() if k.startswith("layer.")]
    return (
        f"# Mask: {method.name}, {method.granularity}, {method.sparsity:.0%} sparsity\n\n"
        f"A pruning mask made by excise for `{manifest.base_model.spec}` "
        f"(weights sha256 `{manifest.base_model.weights_sha256[:16]}`).\n\n"
        f"- Scores: {method.name} over {calibration.get('count', '?')} x {calibration.get('length', '?')} "
        f"tokens of {calibration.get('source', '?')}\n"
        f"- Sparsity achieved: {manifest.sparsity['overall']:.4f} of decoder linear weights"
        + (f" ({min(layers):.4f}-{max(layers):.4f} per layer)" if layers else "")
        + "\n"
        "- Embeddings, norms and the LM head are not pruned.\n"
        f"{ppl_line}"
        f"- Files: `masks.safetensors` (bit-packed, True = kept)"
        + (", `scores.safetensors` (raw scores; cut other sparsities with `--from-scores`)" if has_scores else "")
        + (", `weights.safetensors` (the kept weights as SparseGPT's update re-fitted them)" if has_weights else "")
        + ", `manifest.json` (provenance, per-layer sparsity, timings)\n\n"
        + (
            "Apply with `copy_weights(model, load_weights(folder))` (`excise.artifacts.updates`), then the mask"
            if has_weights
            else "Apply with `MaskSet.load(folder).apply(get_adapter(model))`"
        )
        + ", or export a dense folder for vLLM (`excise export --to hf`).\n"
    )
