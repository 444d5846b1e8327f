"""Scoring a model spread over devices or offloaded, and in reduced precision."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from excise.errors import ExciseError
from excise.models.loading import load_model
from excise.models.placement import ComputeSettings, check_dtype
from excise.scoring import score_model


def _map(layer_1: str) -> dict[str, str]:
    """Everything on cpu but decoder layer 1 (tiny llama and qwen2 module names)."""
    return {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": layer_1,
            "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


def _flat(result) -> dict[str, torch.Tensor]:
    s = result.scores
    return {f"w/{k}": v for k, v in s.weights.items()} | {f"n/{k}": v for k, v in s.neurons.items()} | {
        f"h/{k}": v for k, v in s.heads.items()}


@pytest.mark.parametrize(("method", "recompute"), [("lrp", False), ("lrp", True), ("gradient", True),
                                                     ("wanda", False), ("magnitude", False)])
def test_offloaded_layers_score_as_on_one_device(tiny_llama_dir, method, recompute):
    """Layer 1 offloaded to disk: accelerate keeps meta placeholders outside its forward and
    fetches the weights for it; the scores equal the single-device run's."""
    windows = torch.randint(3, 384, (2, 10), generator=torch.Generator().manual_seed(0))
    options = dict(granularities={"weight", "neuron", "head"}, progress=False)
    single = score_model(load_model(tiny_llama_dir).model, windows, method, **options)
    spread = load_model(tiny_llama_dir, device_map=_map("disk")).model
    assert spread.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # really offloaded
    offloaded = score_model(spread, windows, method, recompute=recompute, **options)
    expected, got = _flat(single), _flat(offloaded)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-7, msg=key)


def test_a_map_that_leaves_a_layer_on_meta_is_refused_before_loading():
    with pytest.raises(ValidationError, match="leaves model.layers.1 on the meta device"):
        ComputeSettings(device_map=_map("meta"))
    with pytest.raises(ValidationError, match="not one of auto"):
        ComputeSettings(device_map="everywhere")


def test_reduced_precision_sums_in_float32(tiny_llama_dir):
    """A bfloat16 model's scores are fp32 sums close to the fp32 model's (ranks agree)."""
    windows = torch.randint(3, 384, (4, 16), generator=torch.Generator().manual_seed(0))
    full = score_model(load_model(tiny_llama_dir).model, windows, "lrp", progress=False)
    half = score_model(load_model(tiny_llama_dir, dtype="bfloat16").model, windows, "lrp", progress=False)
    assert half.dtype == "bfloat16" and full.dtype == "float32"
    for key, expected in full.scores.weights.items():
        got = half.scores.weights[key]
        assert got.dtype == torch.float32
        ranks = torch.corrcoef(torch.stack([expected.flatten().argsort().argsort().float(),
                                            got.flatten().argsort().argsort().float()]))[0, 1]
        assert ranks > 0.95, key


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_dtypes_this_cpu_runs_pass_the_check(dtype):
    check_dtype("cpu", dtype)


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValidationError):
        ComputeSettings(dtype="float8")
    with pytest.raises(ExciseError, match="dtype 'int8' is not supported"):
        load_model("smollm2", dtype="int8")


def test_jobs_that_change_weights_refuse_offloaded_modules(tiny_llama_dir):
    """Scoring reads offloaded weights; a job's masks would have to change them, and accelerate
    re-reads them from its store at every forward."""
    from excise.models.loading import load_job_model

    with pytest.raises(ExciseError, match="pruning changes weights, and the device map offloads 9 modules"):
        load_job_model(tiny_llama_dir, ComputeSettings(device_map=_map("disk")), "pruning")
    placed = load_job_model(tiny_llama_dir, ComputeSettings(device_map=_map("cpu")), "pruning").model
    assert all(p.device.type == "cpu" for p in placed.parameters())
