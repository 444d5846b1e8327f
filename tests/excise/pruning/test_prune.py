"""`prune` and `excise prune`: the mask artifact, --from-scores, bad input, one end-to-end run on SmolLM2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from excise.cli.main import main
from excise.data.windows import DataSpec
from excise.errors import ExciseError
from excise.evaluation.perplexity import perplexity
from excise.artifacts.manifest import Manifest
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.pruning.run import PruneConfig, prune
from excise.artifacts.scores import Scores
from excise.selection import removal_count

CALIBRATION = DataSpec(source="news", split="calibration", count=4, length=32, order="random")
EVALUATION = DataSpec(source="news", split="evaluation", count=2, length=32, order="sequential")


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Keep the dense-perplexity cache of these tests out of the user's excise home."""
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))


def config(model, **overrides) -> PruneConfig:
    values = dict(model=str(model), method="wanda", sparsity=0.5, calibration=CALIBRATION, evaluation=EVALUATION)
    return PruneConfig(**(values | overrides))


def test_artifact_round_trips_and_reapplies_exactly(tiny_llama_dir, tmp_path):
    out = prune(config(tiny_llama_dir, save_scores=True), tmp_path / "mask")
    files = ["README.md", "manifest.json", "masks.safetensors", "scores.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == files
    manifest = Manifest.load(out)  # verifies every file's hash
    assert manifest.kind == "mask" and manifest.method.name == "wanda"
    assert manifest.method.granularity == "row" and manifest.method.sparsity == 0.5
    assert manifest.data["calibration"] == CALIBRATION.model_dump()
    assert manifest.data["evaluation"] == EVALUATION.model_dump()
    assert {"scoring_s", "selection_s", "evaluation_after_s"} <= set(manifest.timings)
    assert manifest.resources["peak_rss_mb"] > 0
    assert manifest.config == config(tiny_llama_dir, save_scores=True).model_dump(mode="json")  # the resolved config

    # the masks on disk are the row selection of the scores on disk, and exactly 50% per row
    masks, scores = MaskSet.load(out), Scores.load(out)
    for name, keep in masks.weights.items():
        assert ((~keep).sum(dim=1) == removal_count(keep.shape[1], 0.5)).all()
        assert manifest.sparsity[name] == 0.5
        removed_max = torch.where(keep, -torch.inf, scores.weights[name]).amax(dim=1)
        kept_min = torch.where(keep, scores.weights[name], torch.inf).amin(dim=1)
        assert (removed_max <= kept_min).all()
    assert manifest.sparsity["overall"] == 0.5 and manifest.sparsity["layer.0"] == 0.5

    # applied to a fresh copy: pruned weights exactly 0, the rest bit-identical, same perplexity as recorded
    loaded = load_model(tiny_llama_dir)
    dense = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    masks.apply(get_adapter(loaded.model))
    for name, param in loaded.model.named_parameters():
        keep = masks.weights.get(name, torch.ones_like(param, dtype=torch.bool))
        assert (param[~keep] == 0).all() and torch.equal(param[keep], dense[name][keep]), name
    from excise.data.windows import token_windows

    windows = token_windows(loaded.tokenizer, EVALUATION)
    assert perplexity(loaded.model, windows, progress=False).perplexity == pytest.approx(
        manifest.metrics["perplexity"]["after"], rel=1e-6
    )
    assert manifest.metrics["perplexity"]["after"] != manifest.metrics["perplexity"]["before"]
    assert "wanda" in (out / "README.md").read_text()


def test_from_scores_gives_the_masks_of_scoring_again(tiny_llama_dir, tmp_path):
    saved = prune(config(tiny_llama_dir, method="gradient", save_scores=True, evaluation=None), tmp_path / "scored")
    cut = prune(config(tiny_llama_dir, method=None, sparsity=0.3, from_scores=saved, evaluation=None), tmp_path / "cut")
    again = prune(config(tiny_llama_dir, method="gradient", sparsity=0.3, evaluation=None), tmp_path / "again")
    cut_masks, again_masks = MaskSet.load(cut), MaskSet.load(again)
    assert cut_masks.weights.keys() == again_masks.weights.keys()
    assert all(torch.equal(cut_masks.weights[k], again_masks.weights[k]) for k in cut_masks.weights)
    manifest = Manifest.load(cut)
    assert manifest.method.name == "gradient" and manifest.parent == str(saved.resolve())
    assert manifest.data["calibration"] == CALIBRATION.model_dump()
    assert "scoring_s" not in manifest.timings  # nothing was scored


def test_from_scores_refuses_another_model_and_another_method(tiny_llama_dir, tiny_qwen2_dir, tmp_path):
    saved = prune(config(tiny_llama_dir, method="magnitude", save_scores=True, evaluation=None), tmp_path / "scored")
    with pytest.raises(ExciseError, match="scored on another model"):
        prune(config(tiny_qwen2_dir, method=None, from_scores=saved), tmp_path / "other")
    with pytest.raises(ExciseError, match="holds magnitude scores, not wanda"):
        prune(config(tiny_llama_dir, method="wanda", from_scores=saved), tmp_path / "other")
    without = prune(config(tiny_llama_dir, method="magnitude", evaluation=None), tmp_path / "plain")
    with pytest.raises(ExciseError, match="no saved scores"):
        prune(config(tiny_llama_dir, method=None, from_scores=without), tmp_path / "other")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("granularity", "key"), [("neuron", "neurons"), ("head", "heads")])
def test_structured_artifact(tiny_llama_dir, tmp_path, granularity, key):
    out = prune(config(tiny_llama_dir, method="wanda", granularity=granularity, evaluation=None), tmp_path / "m")
    masks = MaskSet.load(out)
    assert not masks.weights and getattr(masks, key)
    adapter = get_adapter(load_model(tiny_llama_dir).model)
    for layer in adapter.layers():
        size = layer.mlp.num_neurons if granularity == "neuron" else layer.attention.num_heads
        assert int((~getattr(masks, key)[layer.index]).sum()) == removal_count(size, 0.5)
    assert Manifest.load(out).sparsity["overall"] > 0


def test_dense_perplexity_is_cached(tiny_llama_dir, tmp_path):
    first = Manifest.load(prune(config(tiny_llama_dir, method="magnitude"), tmp_path / "a"))
    second = Manifest.load(prune(config(tiny_llama_dir, method="magnitude", sparsity=0.3), tmp_path / "b"))
    assert "evaluation_before_s" in first.timings and "evaluation_before_s" not in second.timings
    assert first.metrics["perplexity"]["before"] == second.metrics["perplexity"]["before"]


def test_out_is_replaced_only_with_force(tiny_llama_dir, tmp_path):
    out = prune(config(tiny_llama_dir, method="magnitude", evaluation=None), tmp_path / "m")
    with pytest.raises(ExciseError, match="already exists"):
        prune(config(tiny_llama_dir, method="magnitude", sparsity=0.3, evaluation=None), out)
    prune(config(tiny_llama_dir, method="magnitude", sparsity=0.3, evaluation=None), out, force=True)
    assert Manifest.load(out).method.sparsity == 0.3


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_writes_an_artifact(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "mask"
    code = main(
        ["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5",
         "--granularity", "nm", "--selection-param", "m=4", "--calibration", "news:2x32", "--eval", "none",
         "--out", str(out)]
    )
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    for keep in MaskSet.load(out).weights.values():
        assert ((~keep).view(keep.shape[0], -1, 4).sum(-1) == 2).all()


@pytest.fixture(scope="module")
def unknown_architecture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return folder


BAD_INPUT = [
    (["--sparsity", "1.0"], "sparsity"),
    (["--sparsity", "-0.1"], "sparsity"),
    (["--method", "sorcery"], "unknown method 'sorcery'"),
    (["--granularity", "diagonal"], "unknown granularity 'diagonal'"),
    (["--calibration", "news:100000x64"], "fewer than the 100000 asked for"),
    (["--eval", "news:100000x64"], "fewer than the 100000 asked for"),
    (["--model", "UNKNOWN"], "model type 'gpt2' is not supported"),
    (["--model", "no-such-model"], "neither a folder nor a known name"),
    (["--from-scores", "NOWHERE"], "not an excise artifact"),
    (["--granularity", "nm", "--sparsity", "0.3"], "multiple of 1/4"),
    (["--selection-param", "n=2"], "Extra inputs are not permitted"),
    (["--method", "sparsegpt", "--granularity", "neuron"], "sparsegpt chooses single weights"),
    (["--method", "sparsegpt", "--selection-param", "allocation=relevance"], "no scores to allocate"),
    (["--reconstruct-param", "damping=0"], "reconstruction.damping"),
    (["--selection-param", "allocation=outliers"], "allocation"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_cli_bad_input_one_line_exit_2_nothing_written(
    args, message, tiny_llama_dir, unknown_architecture, tmp_path, capsys
):
    defaults = {"--model": str(tiny_llama_dir), "--method": "magnitude", "--sparsity": "0.5",
                "--calibration": "news:2x32", "--eval": "none", "--out": str(tmp_path / "out" / "mask")}
    given = dict(zip(args[::2], args[1::2], strict=True))
    placeholders = {"UNKNOWN": str(unknown_architecture), "NOWHERE": str(tmp_path / "nowhere")}
    given = {key: placeholders.get(value, value) for key, value in given.items()}
    argv = ["prune", *[item for pair in (defaults | given).items() for item in pair]]
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("excise: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_cli_subprocess_refuses_existing_out(tiny_llama_dir, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "excise.cli.main", "prune", "--model", str(tiny_llama_dir), "--method", "magnitude",
         "--sparsity", "0.5", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    expected = f"excise: error: {out} already exists; choose another --out or pass --force to replace it"
    assert result.stderr.strip().splitlines()[-1] == expected
    assert list(out.iterdir()) == []


# ---- the real model --------------------------------------------------------------------------
@pytest.mark.slow
def test_lrp_end_to_end_on_smollm2(smollm2_dir, tmp_path):
    out = tmp_path / "smollm2-lrp"
    code = main(
        ["prune", "--model", str(smollm2_dir), "--method", "lrp", "--sparsity", "0.5", "--calibration", "wiki:4x128",
         "--eval", "wiki:4x128", "--save-scores", "--out", str(out)]
    )
    assert code == 0
    manifest = Manifest.load(out)
    ppl = manifest.metrics["perplexity"]
    assert 1 < ppl["before"] < ppl["after"] < 10 * ppl["before"]  # hurt, not destroyed, at 50% row-wise
    assert manifest.sparsity["overall"] == 0.5
    assert all(manifest.sparsity[f"layer.{i}"] == 0.5 for i in range(30))
    assert manifest.timings["scoring_s"] > 0 and manifest.resources["peak_rss_mb"] > 0
    scores = Scores.load(out)
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.weights.values())


def test_lrp_prunes_with_token_absolute_aggregation_unless_told_otherwise():
    assert PruneConfig(method="lrp", sparsity=0.5).params == {"aggregation": "token_absolute"}
    assert PruneConfig(method="lrp", sparsity=0.5, params={"aggregation": "absolute"}).params == {"aggregation": "absolute"}
    assert PruneConfig(method="wanda", sparsity=0.5).params == {}
