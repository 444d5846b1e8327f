"""The EAP scorer against an explicit float64 computation, one prompt at a time."""

from __future__ import annotations

import copy

import pytest
import torch

from excise.errors import ExciseError
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.scoring import ReferenceBatch, TaskTarget, score_model


@pytest.fixture(scope="module", params=["llama", "opt"])
def tiny(request):
    return load_model(request.getfixturevalue(f"tiny_{request.param}_dir")).model


@pytest.fixture(scope="module")
def batches():
    """Two task batches, the second right-padded; corrupted prompts share the clean lengths."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 384, (4, 8), generator=gen)
    corrupted = torch.randint(3, 384, (4, 8), generator=gen)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    target = [
        TaskTarget(position=torch.tensor([7, 7]), correct=torch.tensor([10, 20]), incorrect=torch.tensor([30, 40])),
        TaskTarget(position=torch.tensor([7, 4]), correct=torch.tensor([50, 60]), incorrect=torch.tensor([70, 80])),
    ]
    return [
        ReferenceBatch(ids[:2], target=target[0], corrupted_input_ids=corrupted[:2]),
        ReferenceBatch(ids[2:], attention_mask=mask, target=target[1], corrupted_input_ids=corrupted[2:]),
    ]


def _activations(m, units, ids) -> dict:
    """Each unit tensor's input on `ids` (one prompt, no padding): key -> [T, features]."""
    seen = {}
    handles = [module.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0]))
               for key, module in units.items()]
    with torch.no_grad():
        m(input_ids=ids)
    for handle in handles:
        handle.remove()
    return {key: x.reshape(ids.shape[1], -1).clone() for key, x in seen.items()}


def _explicit(model, batches, baseline: str = "corrupted") -> tuple[dict, dict]:
    """|mean over prompts of sum over tokens of d(logit diff)/da * (a_clean - b)| per unit, b the activation
    on the corrupted prompt or the unit's mean over every real token of the clean prompts."""
    m = copy.deepcopy(model).double()
    adapter = get_adapter(m)
    units = {("head", l.index): l.attention.o_proj for l in adapter.layers()}
    units |= {("neuron", l.index): l.mlp.output for l in adapter.layers()}
    totals = {key: 0.0 for key in units}
    count = 0
    prompts = [(batch, b, int(batch.mask[b].sum())) for batch in batches for b in range(len(batch))]
    clean = [_activations(m, units, batch.input_ids[b : b + 1, :length]) for batch, b, length in prompts]
    means = {key: torch.cat([c[key] for c in clean]).mean(0) for key in units}
    for batch in batches:
        for b in range(len(batch)):
            length = int(batch.mask[b].sum())
            clean_ids, bad_ids = batch.input_ids[b : b + 1, :length], batch.corrupted_input_ids[b : b + 1, :length]
            corrupted = _activations(m, units, bad_ids) if baseline == "corrupted" else means
            seen = {}
            handles = [module.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0]))
                       for key, module in units.items()]
            embeds = adapter.embeddings()[0](clean_ids).detach().requires_grad_()
            logits = m(inputs_embeds=embeds).logits[0, int(batch.target.position[b])]
            for x in seen.values():
                x.retain_grad()
            (logits[batch.target.correct[b]] - logits[batch.target.incorrect[b]]).backward()
            for handle in handles:
                handle.remove()
            for key, x in seen.items():
                product = x.grad.reshape(length, -1) * (x.detach().reshape(length, -1) - corrupted[key])  # [T, features]
                size = adapter.layers()[0].attention.head_dim if key[0] == "head" else 1  # features per unit
                totals[key] = totals[key] + product.sum(0).view(-1, size).sum(-1)
            count += 1
    heads = {layer: (t / count).abs() for (kind, layer), t in totals.items() if kind == "head"}
    neurons = {layer: (t / count).abs() for (kind, layer), t in totals.items() if kind == "neuron"}
    return heads, neurons


@pytest.mark.parametrize("baseline", ["corrupted", "mean"])
def test_eap_is_gradient_times_clean_minus_baseline_activation(tiny, batches, baseline):
    scores = score_model(tiny, batches, "eap", granularities={"head", "neuron"}, target="task_logit_diff",
                         progress=False, baseline=baseline).scores
    heads, neurons = _explicit(tiny, batches, baseline)
    for layer in heads:
        torch.testing.assert_close(scores.heads[layer].double(), heads[layer], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(scores.neurons[layer].double(), neurons[layer], rtol=1e-4, atol=1e-7)
    assert any(float(s.abs().sum()) > 0 for s in scores.heads.values())


def test_eap_refuses_prompts_without_corrupted_counterparts(tiny, batches):
    plain = [ReferenceBatch(b.input_ids, b.attention_mask, b.target) for b in batches]
    with pytest.raises(ExciseError, match="corrupted counterpart"):
        score_model(tiny, plain, "eap", granularities={"head"}, target="task_logit_diff", progress=False)
