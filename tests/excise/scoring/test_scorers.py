"""wanda, magnitude, gradient and activation against independent float64 computations,
plus streaming (no per-sample state) and bad-input checks for every scorer."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from excise.errors import ExciseError
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.scoring import SCORERS, ReferenceBatch, kv_group_scores, score_model


@pytest.fixture(scope="module", params=["llama", "opt"])
def tiny(request):
    return load_model(request.getfixturevalue(f"tiny_{request.param}_dir")).model


@pytest.fixture(scope="module")
def padded_batches():
    """Two batches; the second right-padded, so padding must be left out of every statistic."""
    ids = torch.randint(3, 384, (4, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return [ReferenceBatch(ids[:2]), ReferenceBatch(ids[2:], attention_mask=mask)]


def _float64_inputs(model, batches, modules_of):
    """Inputs (real tokens only) of each named linear, by running a float64 copy with our own hooks."""
    m = copy.deepcopy(model).double()
    linears = modules_of(get_adapter(m))
    seen = {name: [] for name in linears}
    current = {}
    handles = [
        linear.register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(
            args[0].reshape(*current["mask"].shape, -1)[current["mask"].bool()]
        ))
        for name, linear in linears.items()
    ]
    with torch.no_grad():
        for batch in batches:
            current["mask"] = batch.mask
            m(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(xs) for name, xs in seen.items()}, linears  # [tokens, in]


def test_magnitude_is_absolute_weight(tiny):
    scores = score_model(tiny, None, "magnitude", granularities={"weight", "neuron", "head"}, progress=False).scores
    adapter = get_adapter(tiny)
    for name, linear in adapter.prunable_linears().items():
        assert torch.equal(scores.weights[f"{name}.weight"], linear.weight.detach().abs())
    layer = adapter.layers()[0]
    down = layer.mlp.output.weight.detach().double().abs()
    torch.testing.assert_close(scores.neurons[0].double(), down.sum(0))
    o = layer.attention.o_proj.weight.detach().double().abs()
    torch.testing.assert_close(scores.heads[0].double(), o.sum(0).view(layer.attention.num_heads, -1).sum(-1))


def test_wanda_is_weight_times_input_norm(tiny, padded_batches):
    result = score_model(tiny, padded_batches, "wanda", granularities={"weight", "neuron"}, progress=False)
    inputs, linears = _float64_inputs(tiny, padded_batches, lambda a: a.prunable_linears())
    assert result.tokens == 4 * 9 - 3
    for name, linear in linears.items():
        expected = linear.weight.abs() * inputs[name].norm(dim=0)[None, :]  # |W_ij| * ||X_j||_2
        torch.testing.assert_close(result.scores.weights[f"{name}.weight"].double(), expected, rtol=1e-5, atol=1e-7)
        assert inputs[name].shape[0] == result.tokens


def test_activation_is_mean_absolute_activation(tiny, padded_batches):
    scores = score_model(tiny, padded_batches, "activation", granularities={"neuron", "head"}, progress=False).scores
    layers = get_adapter(tiny).layers()
    outputs, _ = _float64_inputs(
        tiny, padded_batches,
        lambda a: {f"mlp{l.index}": l.mlp.output for l in a.layers()} | {f"o{l.index}": l.attention.o_proj for l in a.layers()},
    )
    for layer in layers:
        torch.testing.assert_close(scores.neurons[layer.index].double(), outputs[f"mlp{layer.index}"].abs().mean(0))
        heads = outputs[f"o{layer.index}"].abs().view(-1, layer.attention.num_heads, layer.attention.head_dim)
        torch.testing.assert_close(scores.heads[layer.index].double(), heads.mean((0, 2)))


def test_gradient_is_absolute_weight_times_loss_gradient(tiny, padded_batches):
    result = score_model(tiny, padded_batches, "gradient", progress=False)
    m = copy.deepcopy(tiny).double()
    linears = get_adapter(m).prunable_linears()
    expected = {name: torch.zeros_like(linear.weight) for name, linear in linears.items()}
    for batch in padded_batches:
        for b in range(len(batch)):  # one sample at a time: the sample's mean next-token NLL
            ids, mask = batch.input_ids[b : b + 1], batch.mask[b : b + 1]
            m.zero_grad()
            logits = m(input_ids=ids, attention_mask=mask.long()).logits[0, :-1]
            keep = (mask[0, :-1] * mask[0, 1:]).bool()
            torch.nn.functional.cross_entropy(logits[keep], ids[0, 1:][keep]).backward()
            for name, linear in linears.items():
                expected[name] += (linear.weight * linear.weight.grad).abs() / 4
    for name in linears:
        torch.testing.assert_close(result.scores.weights[f"{name}.weight"].double(), expected[name], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("method", ["lrp", "gradient", "wanda", "activation"])
def test_repeating_the_data_keeps_the_mean(tiny_llama_dir, method):
    """Streaming means: N copies of one batch give the scores of one copy (wanda's norm grows
    by sqrt(N), as an L2 norm over N times the tokens should). Catches per-sample state."""
    model = load_model(tiny_llama_dir).model
    window = torch.randint(0, 384, (1, 8), generator=torch.Generator().manual_seed(4))
    granularities = {"neuron", "head"} if method == "activation" else {"weight", "neuron", "head"}
    once = score_model(model, window, method, granularities=granularities, progress=False).scores
    thrice = score_model(model, window.repeat(3, 1), method, granularities=granularities, progress=False).scores
    factor = 3**0.5 if method == "wanda" else 1.0
    for kind in ("weights", "neurons", "heads"):
        for key, value in getattr(once, kind).items():
            torch.testing.assert_close(getattr(thrice, kind)[key], value * factor, rtol=1e-5, atol=1e-8)


def test_kv_group_scores_sum_the_query_heads_sharing_a_group():
    assert torch.equal(kv_group_scores(torch.tensor([1.0, 2.0, 3.0, 4.0]), 2), torch.tensor([3.0, 7.0]))


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        SCORERS.add("wanda", SCORERS["wanda"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "obs"}, "unknown scoring method 'obs'"),
        ({"method": "wanda", "granularities": {"row"}}, "unknown granularity row"),
        ({"method": "activation", "granularities": {"weight"}}, "cannot score weight"),
        ({"method": "lrp", "target": "next"}, "unknown target 'next'"),
        ({"method": "lrp", "target": "task_correct"}, "needs task batches"),
        ({"method": "wanda", "data": None}, "needs reference data"),
        ({"method": "wanda", "data": torch.zeros(2, 3)}, "LongTensor"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_llama_dir, kwargs, message):
    model = load_model(tiny_llama_dir).model
    kwargs = {"data": torch.zeros(1, 4, dtype=torch.long), **kwargs}
    with pytest.raises(ExciseError, match=message):
        score_model(model, kwargs.pop("data"), kwargs.pop("method"), progress=False, **kwargs)


def test_unknown_parameters_are_refused(tiny_llama_dir):
    model = load_model(tiny_llama_dir).model
    with pytest.raises(ValidationError):
        score_model(model, torch.zeros(1, 4, dtype=torch.long), "lrp", aggregation="median", progress=False)
    with pytest.raises(ValidationError):
        score_model(model, None, "magnitude", epsilon=0.1, progress=False)
