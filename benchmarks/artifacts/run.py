"""Artifacts benchmark on SmolLM2: sparse checkpoint sizes, load times, vLLM decode speed of dense vs shrunk,
and perplexity of shrunk == masked.

    python benchmarks/artifacts/run.py [--work DIR] [--out benchmarks/results/artifacts.md] [--sections ...]
    python benchmarks/artifacts/run.py --render   # rewrite the .md and .png from the saved .json, measuring nothing

Writes artifacts.md, artifacts.json (the same numbers, the raw per-repeat timings, command, machine, settings)
and artifacts.png beside `--out`; the JSON is rewritten after every section, so a crash loses only the section
it happened in, and `--render` rebuilds the rest from it.

Masks are magnitude masks (|W| row-wise; neurons by ||input rows|| · ||output column||): the size of a sparse
checkpoint depends only on how many weights are pruned, and speed only on the shrunk shape, not on the method.
vLLM engines run one at a time, each in its own process, with the same thread binding.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]  # report, benchmarks
from report import render  # noqa: E402
from benchmarks.results_files import CpuWatch, machine, write_json  # noqa: E402

from excise.artifacts.atomic import atomic_folder  # noqa: E402
from excise.data.windows import DataSpec, token_windows  # noqa: E402
from excise.evaluation.perplexity import perplexity  # noqa: E402
from excise.export.pipeline import export_artifact  # noqa: E402
from excise.export.vllm_probe import ProbeRequest, probe  # noqa: E402
from excise.artifacts.manifest import Manifest, MethodInfo  # noqa: E402
from excise.artifacts.masks import MaskSet  # noqa: E402
from excise.models.adapters import get_adapter  # noqa: E402
from excise.models.identity import base_model_ref  # noqa: E402
from excise.models.loading import load_model, resolve_model_path  # noqa: E402
from excise.artifacts.scores import Scores  # noqa: E402
from excise.selection import get_selection  # noqa: E402

logger = logging.getLogger("benchmarks.artifacts")

SETTINGS = {
    "model": "smollm2", "sparsities": [0.3, 0.5, 0.6], "neuron_shares": [0.25, 0.5], "batch": 8,
    "prompt_tokens": 32, "output_tokens": 64, "repeats": 3, "perplexity_spec": "wiki:8x256", "load_rounds": 2,
}
SECTIONS = ("sizes", "loads", "perplexity", "vllm")


def magnitude_masks(model, unit: str, sparsity: float) -> MaskSet:
    adapter = get_adapter(model)
    if unit == "weight":
        scores = Scores(weights={f"{n}.weight": m.weight.detach().abs() for n, m in adapter.prunable_linears().items()})
        return get_selection("row")(scores, adapter, sparsity)
    neurons = {}
    for layer in adapter.layers():  # a neuron's magnitude: its input rows' norm times its output column's norm
        inputs = torch.stack([p.weight.detach().norm(dim=1) for p in layer.mlp.inputs]).prod(dim=0)  # [width]
        neurons[layer.index] = inputs * layer.mlp.output.weight.detach().norm(dim=0)
    return get_selection("neuron")(Scores(neurons=neurons), adapter, sparsity)


def write_masks(masks: MaskSet, out: Path, unit: str, sparsity: float) -> Path:
    with atomic_folder(out, force=True) as tmp:
        masks.save(tmp)
        granularity = "row" if unit == "weight" else "neuron"
        method = MethodInfo(name="magnitude", granularity=granularity, sparsity=sparsity)
        Manifest(kind="mask", base_model=base_model_ref("smollm2"), method=method).save(tmp)
    return out


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def sizes(work: Path, model) -> list[dict]:
    rows = []
    for sparsity in SETTINGS["sparsities"]:
        artifact = write_masks(magnitude_masks(model, "weight", sparsity), work / f"rows-{sparsity}", "weight", sparsity)
        for dtype in ("float32", "bfloat16"):
            size = export_artifact(artifact, "sparse", work / "sparse", force=True, dtype=dtype).metrics["sparse_size"]
            decode_s, _ = timed(export_artifact, work / "sparse", "hf", work / "restored", force=True)
            rows.append({"sparsity": sparsity, "dtype": dtype, "sparse_to_dense_s": decode_s,
                         **{k: size[k] for k in ("dense_bytes", "sparse_bytes", "ratio", "pruned_tensors_ratio")}})
            logger.info("sizes: %s", rows[-1])
    return rows


def loads(work: Path, base: Path, model, neuron_artifact: Path) -> list[dict]:
    rows_artifact = write_masks(magnitude_masks(model, "weight", 0.5), work / "rows-0.5", "weight", 0.5)
    export_artifact(rows_artifact, "hf", work / "hf", force=True)
    export_artifact(neuron_artifact, "shrunk", work / "shrunk", force=True)
    # 50% of 1536 neurons is more than vLLM's largest LoRA rank (512), so the adapter removes 25%
    quarter = write_masks(magnitude_masks(model, "neuron", 0.25), work / "neurons-0.25", "neuron", 0.25)
    export_artifact(quarter, "lora", work / "lora", force=True)
    from peft import PeftModel

    rows = []
    for label, load in (
        ("dense (base folder)", lambda: load_model(base)),
        ("hf (50% row-wise)", lambda: load_model(work / "hf")),
        ("shrunk (50% neurons)", lambda: load_model(work / "shrunk")),
        ("base + lora (25% neurons, rank 512)", lambda: PeftModel.from_pretrained(load_model(base).model, work / "lora")),
    ):
        rounds = [timed(load)[0] for _ in range(SETTINGS["load_rounds"])]
        rows.append({"format": label, "load_s": min(rounds), "rounds_s": rounds})
    return rows


def vllm_decode(work: Path, base: Path, model, prompts: list[list[int]]) -> list[dict]:
    """Decode time per engine (median over repeats) and the per-repeat figures, dense first."""
    engines = {"dense": base}
    for share in SETTINGS["neuron_shares"]:
        artifact = work / f"neurons-{share}"
        if not artifact.exists():
            write_masks(magnitude_masks(model, "neuron", share), artifact, "neuron", share)
        export_artifact(artifact, "shrunk", work / f"shrunk-{share}", force=True)
        engines[f"shrunk {share:.0%} neurons"] = work / f"shrunk-{share}"
    steps, rows = SETTINGS["output_tokens"] - 1, []
    for label, folder in engines.items():  # one engine at a time
        result = probe(ProbeRequest(model=str(folder), prompts=prompts, max_tokens=SETTINGS["output_tokens"],
                                    timing_repeats=SETTINGS["repeats"]))
        repeats = [g - p for g, p in zip(result.generate_s, result.prefill_s, strict=True)]
        decode = statistics.median(repeats)
        rows.append({"model": label, "decode_s": decode, "decode_s_repeats": repeats, "prefill_s": result.prefill_s,
                     "generate_s": result.generate_s, "engine_load_s": result.load_s, "environment": result.environment,
                     "decode_tokens_per_s": SETTINGS["batch"] * steps / decode, "ms_per_output_token": 1000 * decode / steps})
        logger.info("vllm %s: %s", label, rows[-1])
    for row in rows:
        row["speedup"] = rows[0]["decode_s"] / row["decode_s"]
        row["speedup_repeats"] = [rows[0]["decode_s"] / r for r in row["decode_s_repeats"]]
    return rows


def perplexities(work: Path, base: Path, neuron_artifact: Path) -> dict:
    if not (work / "shrunk").exists():
        export_artifact(neuron_artifact, "shrunk", work / "shrunk")
    loaded = load_model(base)
    spec = DataSpec.parse(SETTINGS["perplexity_spec"], split="evaluation", order="sequential")
    windows = token_windows(loaded.tokenizer, spec)
    MaskSet.load(neuron_artifact).apply(get_adapter(loaded.model))
    masked = perplexity(loaded.model, windows).perplexity
    shrunk = perplexity(load_model(work / "shrunk").model, windows).perplexity
    return {"masked": masked, "shrunk": shrunk, "relative_difference": abs(masked - shrunk) / masked}


def measure(args, record: dict, json_path: Path, watch: CpuWatch) -> None:
    """Runs the chosen sections into `record["sections"]`, saving the JSON after each one."""
    work = args.work or Path(tempfile.mkdtemp(prefix="excise-artifacts-"))
    base = resolve_model_path(SETTINGS["model"])
    loaded = load_model(base)
    spec = DataSpec.parse(f"wiki:{SETTINGS['batch']}x{SETTINGS['prompt_tokens']}", split="evaluation", order="sequential")
    prompts = token_windows(loaded.tokenizer, spec).tolist()
    neuron_artifact = write_masks(magnitude_masks(loaded.model, "neuron", 0.5), work / "neurons-0.5", "neuron", 0.5)
    runs = {
        "sizes": lambda: sizes(work, loaded.model),
        "loads": lambda: loads(work, base, loaded.model, neuron_artifact),
        "perplexity": lambda: perplexities(work, base, neuron_artifact),
        "vllm": lambda: vllm_decode(work, base, loaded.model, prompts),
    }
    try:
        for section in args.sections:
            record["sections"][section] = runs[section]()
            record["cpu"] = watch.summary()
            write_json(json_path, record)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/artifacts.md"),
                        help="the Markdown file; the .json and .png go beside it")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="parts to run")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md and .png from the saved .json")
    args = parser.parse_args()
    json_path = args.out.with_suffix(".json")
    if args.render and not json_path.is_file():
        parser.error(f"--render needs {json_path}, which does not exist")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.render:
        watch = CpuWatch()
        command = " ".join(["python benchmarks/artifacts/run.py", *sys.argv[1:]])
        record = {"command": command, "machine": machine(), "settings": SETTINGS, "sections": {}}
        measure(args, record, json_path, watch)
        record["cpu"] = watch.close()
        write_json(json_path, record)
    render(json.loads(json_path.read_text()), args.out)
    logger.info("wrote %s and its .json, .png", args.out)


if __name__ == "__main__":
    main()
