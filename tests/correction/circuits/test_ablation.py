"""Zero- and mean-ablation against independent computations on the tiny Llama."""

from __future__ import annotations

import pytest
import torch

from correction.circuits.ablation import ablated, input_means
from correction.masks import MaskSet
from correction.models.adapters import get_adapter
from correction.models.loading import load_model
from correction.tasks import TaskExample, encode_examples

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The quick brown fox",
    "Relevance flows backwards from the output logit",
]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_model(tiny_llama_dir)


@pytest.fixture(scope="module")
def batch(tiny):
    return encode_examples(tiny.tokenizer, [TaskExample(p, " to", " the") for p in PROMPTS], strict=False)


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # [n, length, vocab]


def _real(logits, batch):
    return logits[batch.attention_mask.bool()]  # [real tokens, vocab]


def test_ablating_nothing_is_the_full_model(tiny, batch):
    adapter = get_adapter(tiny.model)
    full = _logits(tiny.model, batch)
    keep_all = MaskSet(weights={f"{n}.weight": torch.ones_like(m.weight, dtype=torch.bool) for n, m in adapter.prunable_linears().items()})
    means = input_means(adapter, batch)
    for masks in (MaskSet(), keep_all):
        for mode in ("zero", "mean"):
            with ablated(adapter, masks, mode, means):
                assert torch.equal(_logits(tiny.model, batch), full)


def test_zero_ablating_everything_leaves_embeddings_norm_and_head(tiny, batch):
    adapter = get_adapter(tiny.model)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    everything = MaskSet(
        weights={f"{n}.weight": torch.zeros_like(m.weight, dtype=torch.bool) for n, m in adapter.prunable_linears().items()}
    )
    with ablated(adapter, everything, "zero"), torch.no_grad():
        got = _logits(tiny.model, batch)
        embedded = adapter.embeddings()[0](batch.input_ids)  # residual stream with every block silent
        known = adapter.lm_head()(adapter.final_norm()(embedded))
    assert torch.allclose(got, known, atol=1e-5)
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored exactly


def _independent_mean(model, module, batch) -> torch.Tensor:
    """Mean input of `module` over real tokens, collected by a hook of this test, in float64."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].double()))
    _logits(model, batch)
    handle.remove()
    return seen[0][batch.attention_mask.bool()].mean(dim=0)  # [in]


def _with_replaced_inputs(model, module, columns: torch.Tensor, values: torch.Tensor, batch) -> torch.Tensor:
    def replace(_m, args):
        x = args[0].clone()
        x[..., columns] = values[columns].to(x.dtype)
        return (x,)

    handle = module.register_forward_pre_hook(replace)
    try:
        return _logits(model, batch)
    finally:
        handle.remove()


def test_mean_ablating_a_head_replaces_its_output_by_its_mean(tiny, batch):
    adapter = get_adapter(tiny.model)
    attention = adapter.layers()[1].attention
    head_mask = torch.tensor([True, False, True, True])
    columns = torch.arange(attention.head_dim) + attention.head_dim  # head 1's slice of o_proj's input
    expected = _with_replaced_inputs(
        tiny.model, attention.o_proj, columns, _independent_mean(tiny.model, attention.o_proj, batch), batch
    )
    with ablated(adapter, MaskSet(heads={1: head_mask}), "mean", input_means(adapter, batch)):
        got = _logits(tiny.model, batch)
    assert torch.allclose(_real(got, batch), _real(expected, batch), atol=1e-5)
    with ablated(adapter, MaskSet(heads={1: head_mask}), "zero"):
        assert not torch.allclose(_real(_logits(tiny.model, batch), batch), _real(expected, batch), atol=1e-3)


def test_mean_ablating_neurons_replaces_their_activations_by_their_means(tiny, batch):
    adapter = get_adapter(tiny.model)
    mlp = adapter.layers()[0].mlp
    kept = torch.ones(mlp.num_neurons, dtype=torch.bool)
    kept[::3] = False
    expected = _with_replaced_inputs(
        tiny.model, mlp.output, torch.nonzero(~kept).flatten(), _independent_mean(tiny.model, mlp.output, batch), batch
    )
    with ablated(adapter, MaskSet(neurons={0: kept}), "mean", input_means(adapter, batch)):
        got = _logits(tiny.model, batch)
    assert torch.allclose(_real(got, batch), _real(expected, batch), atol=1e-5)
