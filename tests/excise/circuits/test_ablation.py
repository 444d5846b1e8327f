"""Zero-, mean- and corrupted ablation against independent computations on tiny models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from excise.circuits.ablation import ablated, ablated_score, input_means
from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.tasks import TaskExample, encode_examples
from excise.tasks.metrics import score_logits

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


def _corrupted(batch):
    """The prompts with every real token but the first replaced (same lengths, other content)."""
    ids = batch.input_ids.clone()
    real = batch.attention_mask.bool()
    real[:, 0] = False
    ids[real] = (ids[real] * 7 + 11) % 300
    return dataclasses.replace(batch, input_ids=ids)


def _captured_input(model, module, batch) -> torch.Tensor:
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    _logits(model, batch)
    handle.remove()
    return seen[0]  # [n, length, in]


def _patched_logits(model, module, columns, values, batch) -> torch.Tensor:
    def replace(_m, args):
        x = args[0].clone()
        x[..., columns] = values[..., columns]
        return (x,)

    handle = module.register_forward_pre_hook(replace)
    try:
        return _logits(model, batch)
    finally:
        handle.remove()


def _last(logits, batch):
    return logits[torch.arange(len(batch)), batch.positions]  # [n, vocab]


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # qwen2: q/k/v biases, zeroed for removed heads
def test_corrupted_ablation_patches_a_removed_head_from_the_corrupted_run(family, request):
    loaded = load_model(request.getfixturevalue(f"tiny_{family}_dir"))
    with torch.no_grad():  # random init leaves biases at zero
        for name, parameter in loaded.model.named_parameters():
            if name.endswith(".bias"):
                parameter.normal_(0.0, 3.0)
    adapter = get_adapter(loaded.model)
    clean = encode_examples(loaded.tokenizer, [TaskExample(p, " to", " the") for p in PROMPTS], strict=False)
    bad = _corrupted(clean)
    attention = adapter.layers()[1].attention
    columns = torch.arange(attention.head_dim) + attention.head_dim  # head 1's slice of o_proj's input
    corrupted_head = _captured_input(loaded.model, attention.o_proj, bad)
    expected = score_logits(_last(_patched_logits(loaded.model, attention.o_proj, columns, corrupted_head, clean), clean), clean)
    masks = MaskSet(heads={1: torch.tensor([True, False, True, True])})
    got = ablated_score(adapter, masks, clean, "corrupted", corrupted=bad, batch_size=2)
    assert got.logit_diff == pytest.approx(expected.logit_diff, abs=2e-6)  # a missing q bias moves it by 1e-4
    zero = ablated_score(adapter, masks, clean, "zero")
    assert abs(zero.logit_diff - expected.logit_diff) > 1e-3


def test_corrupted_ablation_patches_removed_neurons_and_nothing_else(tiny, batch):
    adapter = get_adapter(tiny.model)
    bad = _corrupted(batch)
    mlp = adapter.layers()[0].mlp
    kept = torch.ones(mlp.num_neurons, dtype=torch.bool)
    kept[::3] = False
    corrupted_acts = _captured_input(tiny.model, mlp.output, bad)
    patched = _patched_logits(tiny.model, mlp.output, torch.nonzero(~kept).flatten(), corrupted_acts, batch)
    got = ablated_score(adapter, MaskSet(neurons={0: kept}), batch, "corrupted", corrupted=bad)
    assert got.logit_diff == pytest.approx(score_logits(_last(patched, batch), batch).logit_diff, abs=1e-4)
    nothing = ablated_score(adapter, MaskSet(), batch, "corrupted", corrupted=bad)
    assert nothing == score_logits(_last(_logits(tiny.model, batch), batch), batch)


def test_corrupted_prompts_of_another_length_are_refused(tiny, batch):
    shorter = dataclasses.replace(batch, attention_mask=batch.attention_mask.flip(1))
    with pytest.raises(ExciseError, match="tokenize to another length"):
        ablated_score(get_adapter(tiny.model), MaskSet(), batch, "corrupted", corrupted=shorter)
