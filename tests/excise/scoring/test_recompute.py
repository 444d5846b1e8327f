"""Layer recomputation: the same scores as keeping every activation, with backward memory
that no longer grows layer by layer."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from excise.errors import ExciseError
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.scoring import ReferenceBatch, TaskTarget, score_model
from excise.scoring.recompute import layer_recomputation


@pytest.fixture(scope="module")
def padded_batches():
    """Two task batches with corrupted prompts (for eap), the second right-padded."""
    gen = torch.Generator().manual_seed(0)
    ids, corrupted = torch.randint(3, 384, (4, 9), generator=gen), torch.randint(3, 384, (4, 9), generator=gen)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    targets = [
        TaskTarget(position=torch.tensor([8, 8]), correct=torch.tensor([10, 20]), incorrect=torch.tensor([30, 40])),
        TaskTarget(position=torch.tensor([8, 5]), correct=torch.tensor([50, 60]), incorrect=torch.tensor([70, 80])),
    ]
    return [
        ReferenceBatch(ids[:2], target=targets[0], corrupted_input_ids=corrupted[:2]),
        ReferenceBatch(ids[2:], attention_mask=mask, target=targets[1], corrupted_input_ids=corrupted[2:]),
    ]


def _all_scores(result) -> dict[str, torch.Tensor]:
    scores = result.scores
    return (
        {f"w/{k}": v for k, v in scores.weights.items()}
        | {f"n/{k}": v for k, v in scores.neurons.items()}
        | {f"h/{k}": v for k, v in scores.heads.items()}
    )


@pytest.mark.parametrize(
    ("method", "params", "granularities", "target"),
    [
        ("lrp", {}, {"weight", "neuron", "head"}, "next_token"),
        ("lrp", {"aggregation": "token_absolute"}, {"weight"}, "next_token"),
        ("gradient", {}, {"weight", "neuron", "head"}, "next_token"),
        ("lrp", {}, {"neuron", "head"}, "task_logit_diff"),
        ("eap", {}, {"neuron", "head"}, "task_logit_diff"),
    ],
)
def test_recomputed_scores_equal_kept_activations(tiny_model_dir, padded_batches, method, params, granularities, target):
    model = load_model(tiny_model_dir).model
    data = padded_batches if target == "task_logit_diff" else torch.randint(3, 384, (3, 12), generator=torch.Generator().manual_seed(1))
    options = dict(granularities=granularities, progress=False, batch_size=2, **params)
    if target == "task_logit_diff":
        options["target"] = target
    kept = score_model(model, data, method, **options)
    recomputed = score_model(model, data, method, recompute=True, **options)
    assert recomputed.recompute and not kept.recompute
    expected, got = _all_scores(kept), _all_scores(recomputed)
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-7, msg=key)
    # nothing stays behind: the layers run their own forward again
    assert all("forward" not in vars(layer) for layer in get_adapter(model).layer_modules())


def _saved_bytes(model, ids: torch.Tensor, recompute: bool) -> int:
    """Bytes autograd keeps for the backward pass of one forward (what activation memory is)."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    adapter = get_adapter(model)
    embeddings = adapter.embeddings()[0].register_forward_hook(lambda _m, _a, out: out.requires_grad_())
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            with layer_recomputation(adapter) if recompute else nullcontext():
                loss = model(input_ids=ids, use_cache=False).logits.float().logsumexp(-1).sum()
        loss.backward()
    finally:
        embeddings.remove()
    return total


def test_recomputation_keeps_only_layer_inputs_whatever_the_depth():
    """Two more layers cost two more layer inputs ([T, hidden] each) with recomputation, and
    every activation of two more layers (attention weights included) without."""
    ids = torch.randint(0, 384, (1, 64), generator=torch.Generator().manual_seed(0))
    growth = {}
    for recompute in (False, True):
        sizes = []
        for layers in (2, 4):
            config = LlamaConfig(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                 num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
            sizes.append(_saved_bytes(model, ids, recompute))
        growth[recompute] = sizes[1] - sizes[0]
    hidden_state = 64 * 64 * 4  # [T, hidden] fp32
    assert growth[True] == 2 * hidden_state
    assert growth[False] > 10 * growth[True]


def test_recompute_is_refused_for_forward_only_scorers(tiny_llama_dir):
    model = load_model(tiny_llama_dir).model
    with pytest.raises(ExciseError, match="'wanda' runs no backward pass"):
        score_model(model, torch.zeros(1, 4, dtype=torch.long), "wanda", recompute=True, progress=False)


def test_windows_longer_than_the_context_are_refused_before_scoring(tiny_llama_dir):
    model = load_model(tiny_llama_dir).model  # context 512
    with pytest.raises(ExciseError, match="513 tokens exceed the model's context of 512"):
        score_model(model, torch.zeros(1, 513, dtype=torch.long), "lrp", progress=False)
