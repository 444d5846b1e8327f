import itertools

import pytest
import torch
from peft import PeftModel

from excise.correction.aura import aura_aurocs, aura_scales, auroc
from excise.behaviours import UndesiredText, undesired_batches
from excise.export.lora import write_neuron_lora
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.evaluation.neuron_scales import NeuronScales


def brute_auroc(positives, negatives) -> float:
    """Share of (positive, negative) pairs ordered correctly, by enumeration (float64)."""
    pairs = list(itertools.product(positives, negatives))
    return sum(float(p > n) for p, n in pairs) / len(pairs)


def test_auroc_by_hand_and_against_enumeration():
    assert auroc(torch.tensor([[3.0], [4.0]]), torch.tensor([[1.0], [2.0]])).item() == 1.0
    assert auroc(torch.tensor([[1.0], [4.0]]), torch.tensor([[2.0], [3.0]])).item() == 0.5  # 2 of 4 pairs
    assert auroc(torch.tensor([[1.0]]), torch.tensor([[2.0], [3.0]])).item() == 0.0
    generator = torch.Generator().manual_seed(0)
    positives, negatives = torch.randn(7, 5, generator=generator) + 0.5, torch.randn(9, 5, generator=generator)
    computed = auroc(positives, negatives)
    for unit in range(5):
        assert computed[unit].item() == pytest.approx(brute_auroc(positives[:, unit].tolist(), negatives[:, unit].tolist()))


def test_dampening_takes_the_k_best_separating_neurons_with_aura_factors():
    aurocs = {0: torch.tensor([0.9, 0.4, 0.6]), 1: torch.tensor([0.75, 0.5])}
    two = aura_scales(aurocs, 2).scales
    # factor 1 - 2 (AUROC - 0.5): 0.9 -> 0.2, 0.75 -> 0.5; the rest untouched
    assert torch.allclose(two[0], torch.tensor([0.2, 1.0, 1.0])) and torch.allclose(two[1], torch.tensor([0.5, 1.0]))
    five = aura_scales(aurocs, 5).scales
    # 0.6 -> 0.8 joins; AUROC 0.5 (chance) and 0.4 (anti-correlated) are never dampened
    assert torch.allclose(five[0], torch.tensor([0.2, 1.0, 0.8])) and torch.allclose(five[1], torch.tensor([0.5, 1.0]))


def test_aurocs_of_a_tiny_model_match_an_independent_computation(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    adapter = get_adapter(loaded.model)
    toxic = [UndesiredText("a b c", " d e f"), UndesiredText("b c", " a a"), UndesiredText("c", " f e d c")]
    harmless = [UndesiredText("a b c", " c c"), UndesiredText("d", " e"), UndesiredText("e f", " a b c d")]
    tokenizer = loaded.tokenizer
    computed = aura_aurocs(adapter, undesired_batches(tokenizer, toxic, batch_size=2, max_length=32),
                           undesired_batches(tokenizer, harmless, batch_size=3, max_length=32))

    def means(texts) -> dict[int, list[torch.Tensor]]:
        """Each text alone, unpadded: the mean down_proj input over the continuation's positions."""
        out = {layer.index: [] for layer in adapter.layers()}
        for text in texts:
            prompt = tokenizer.encode(text.prompt, add_special_tokens=False)
            ids = torch.tensor([prompt + tokenizer.encode(text.continuation, add_special_tokens=False)])
            captured = {}
            handles = [layer.mlp.output.register_forward_pre_hook(
                lambda m, args, i=layer.index: captured.__setitem__(i, args[0].double())) for layer in adapter.layers()]
            with torch.no_grad():
                loaded.model(input_ids=ids)
            for handle in handles:
                handle.remove()
            for index, x in captured.items():
                out[index].append(x[0, len(prompt):].mean(0))
        return out

    positives, negatives = means(toxic), means(harmless)
    for index, values in computed.items():
        for unit in range(values.numel()):
            expected = brute_auroc([p[unit].item() for p in positives[index]], [n[unit].item() for n in negatives[index]])
            assert values[unit].item() == pytest.approx(expected)


def test_lora_of_a_dampening_reproduces_the_dampened_model(tiny_llama_dir, tmp_path):
    loaded = load_model(tiny_llama_dir)
    adapter = get_adapter(loaded.model)
    width = adapter.layers()[0].mlp.num_neurons
    scales = {0: torch.ones(width), 1: torch.ones(width)}
    scales[0][[3, 7, 11]] = torch.tensor([0.25, 0.0, 0.6])
    scales[1][[0, 5]] = torch.tensor([0.5, 0.1])
    write_neuron_lora(adapter, scales, loaded.path, tmp_path / "lora")
    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 8, 4]])
    with torch.no_grad():
        dense = loaded.model(input_ids=ids).logits
        NeuronScales(scales).apply(adapter)
        dampened = loaded.model(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(load_model(tiny_llama_dir).model, tmp_path / "lora").eval()(input_ids=ids).logits
    assert (adapted - dampened).abs().max() < 1e-5  # fp32 tolerance
    assert (dense - dampened).abs().max() > 1e-3  # and the dampening did change the model
