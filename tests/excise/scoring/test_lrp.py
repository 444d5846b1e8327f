"""The lrp scorer against an independent float64 implementation of the AttnLRP rules.

The reference re-implements the tiny Llama's forward pass by hand, writing each AttnLRP
rule (efficient mode, lxt 2.1) as value-preserving gradient rescaling, and takes the
relevance of a weight as W * W.grad from plain autograd, one sample at a time. Every
linear runs with its own copy of W per token, so W * W_t.grad is token t's share; each
aggregation (|sum over tokens|, signed sum, sum of |shares|) is then applied explicitly.
The scorer reaches the same numbers through lxt's patches, our compatibility layer and
its own hooks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from excise.errors import ExciseError
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.scoring import ReferenceBatch, TaskTarget, score_model


def scaled_gradient(t: torch.Tensor, factor: float) -> torch.Tensor:
    """Value t, gradient multiplied by `factor` (lxt's uniform rule)."""
    return t * factor + (t * (1 - factor)).detach()


def rms_norm(norm, h):
    """Identity rule: the 1/rms factor is a constant."""
    return norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).detach())


class PerTokenLinears:
    """Runs a linear as y_t = W_t x_t with one copy W_t of W per token of the sample."""

    def __init__(self) -> None:
        self.copies: dict[int, tuple[torch.nn.Linear, torch.Tensor]] = {}

    def __call__(self, linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        copies = linear.weight.detach()[None].repeat(x.shape[1], 1, 1).requires_grad_()  # [T, out, in]
        self.copies[id(linear)] = (linear, copies)
        return torch.einsum("toi,bti->bto", copies, x)

    def relevance(self, linear: torch.nn.Linear) -> torch.Tensor:
        """`[T, out, in]`: W * W_t.grad, token t's share of the weight's relevance."""
        _, copies = self.copies[id(linear)]
        return (linear.weight[None] * copies.grad).detach()


def reference_relevance(model, ids, objective, baseline=None):
    """Per-token shares for one sample: `{param: [T, out, in]}`, `{layer: [T, neurons]}`, `{layer: [T, heads]}`.

    `objective=None` runs the forward pass only and returns `{layer: ([T, neurons], [T, heads * head_dim])}`,
    the unit activations; given those as `baseline`, a unit's share is (a - baseline) * a.grad."""
    m = copy.deepcopy(model).double()
    linear = PerTokenLinears()
    config, inner = m.config, m.model
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    h = inner.embed_tokens(ids)  # [1, T, D]
    positions = torch.arange(ids.shape[1])[None]
    cos, sin = inner.rotary_emb(h, positions)
    causal = torch.full((ids.shape[1], ids.shape[1]), float("-inf"), dtype=torch.float64).triu(1)
    taps = {}
    for i, layer in enumerate(inner.layers):
        attn, mlp = layer.self_attn, layer.mlp
        x = rms_norm(layer.input_layernorm, h)
        q = linear(attn.q_proj, x).view(1, -1, heads, head_dim).transpose(1, 2)
        k = linear(attn.k_proj, x).view(1, -1, kv_heads, head_dim).transpose(1, 2)
        v = linear(attn.v_proj, x).view(1, -1, kv_heads, head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k, v = scaled_gradient(q, 1 / 4), scaled_gradient(k, 1 / 4), scaled_gradient(v, 1 / 2)
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        weights = ((q @ k.transpose(2, 3)) * head_dim**-0.5 + causal).softmax(-1)
        heads_out = (weights @ v).transpose(1, 2).reshape(1, -1, heads * head_dim)  # [1, T, H*d]
        heads_out.retain_grad()
        h = h + linear(attn.o_proj, heads_out)
        x = rms_norm(layer.post_attention_layernorm, h)
        gate = linear(mlp.gate_proj, x)
        gate = gate * (mlp.act_fn(gate) / gate).detach()  # identity rule through SiLU
        hidden = scaled_gradient(gate * linear(mlp.up_proj, x), 1 / 2)  # [1, T, n]
        hidden.retain_grad()
        h = h + linear(mlp.down_proj, hidden)
        taps[i] = (hidden, heads_out)
    logits = m.lm_head(rms_norm(inner.norm, h))
    if objective is None:
        return {i: (a[0].detach(), o[0].detach()) for i, (a, o) in taps.items()}
    objective(logits).backward()
    weights = {f"{name}.weight": linear.relevance(module) for name, module in get_adapter(m).prunable_linears().items()}
    base = baseline or {i: (0.0, 0.0) for i in taps}
    neurons = {i: ((a - base[i][0]) * a.grad)[0].detach() for i, (a, _) in taps.items()}
    heads_rel = {
        i: ((o - base[i][1]) * o.grad)[0].detach().view(-1, heads, head_dim).sum(-1) for i, (_, o) in taps.items()
    }
    return weights, neurons, heads_rel


def aggregate(per_token: torch.Tensor, aggregation: str) -> torch.Tensor:
    """One sample's `[T, ...]` shares -> its relevance under `aggregation`."""
    return {
        "absolute": lambda: per_token.sum(0).abs(),
        "signed": lambda: per_token.sum(0),
        "net_absolute": lambda: per_token.sum(0),  # signed per sample; |.| of the mean, see `finish`
        "token_absolute": lambda: per_token.abs().sum(0),
        "token_squared": lambda: per_token.square().sum(0),
    }[aggregation]()


def finish(mean: torch.Tensor, aggregation: str) -> torch.Tensor:
    """What the mean over samples goes through (net_absolute: the absolute value of the net relevance)."""
    return mean.abs() if aggregation == "net_absolute" else mean


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    return load_model(tiny_llama_dir).model


def _next_token(ids):
    return lambda logits: logits[0, :-1].gather(-1, ids[0, 1:, None]).sum()


@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
@pytest.mark.parametrize("aggregation", ["absolute", "signed", "net_absolute", "token_absolute", "token_squared"])
def test_lrp_matches_float64_attnlrp_reference(tiny_llama, aggregation, recompute):
    windows = torch.randint(0, 384, (3, 10), generator=torch.Generator().manual_seed(1))
    result = score_model(
        tiny_llama, windows, "lrp", granularities={"weight", "neuron", "head"},
        batch_size=2, progress=False, aggregation=aggregation, recompute=recompute,
    )
    per_sample = [reference_relevance(tiny_llama, w[None], _next_token(w[None])) for w in windows]

    def expected(kind: int, key):
        mean = torch.stack([aggregate(sample[kind][key], aggregation) for sample in per_sample]).mean(0)
        return finish(mean, aggregation).float()

    assert set(result.scores.weights) == set(per_sample[0][0])
    for key, score in result.scores.weights.items():
        torch.testing.assert_close(score, expected(0, key), rtol=1e-3, atol=1e-6)
    for layer in (0, 1):
        torch.testing.assert_close(result.scores.neurons[layer], expected(1, layer), rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(result.scores.heads[layer], expected(2, layer), rtol=1e-3, atol=1e-6)
    assert result.samples == 3 and result.tokens == 30


def test_lrp_task_logit_difference_target(tiny_llama):
    ids = torch.randint(0, 384, (2, 8), generator=torch.Generator().manual_seed(2))
    target = TaskTarget(position=torch.tensor([7, 5]), correct=torch.tensor([11, 12]), incorrect=torch.tensor([13, 14]))
    result = score_model(tiny_llama, [ReferenceBatch(ids, target=target)], "lrp", target="task_logit_diff", progress=False)
    per_sample = [reference_relevance(tiny_llama, ids[b : b + 1], _logit_diff(target, b))[0] for b in range(2)]
    for key, score in result.scores.weights.items():
        expected = (aggregate(per_sample[0][key], "absolute") + aggregate(per_sample[1][key], "absolute")) / 2
        torch.testing.assert_close(score, expected.float(), rtol=1e-3, atol=1e-6)


def _logit_diff(target: TaskTarget, b: int):
    pos, good, bad = target.position[b], target.correct[b], target.incorrect[b]
    return lambda logits: logits[0, pos, good] - logits[0, pos, bad]


@pytest.mark.parametrize("aggregation", ["absolute", "net_absolute"])
@pytest.mark.parametrize("baseline", ["mean", "corrupted"])
def test_lrp_relevance_from_a_baseline_activation(tiny_llama, baseline, aggregation):
    """(a - b) * LRP's modified gradient: b the unit's activation on the prompt's corrupted counterpart, or its
    mean over every reference token (both prompts), written out from the float64 reference's activations."""
    gen = torch.Generator().manual_seed(7)
    ids, corrupted = torch.randint(0, 384, (2, 8), generator=gen), torch.randint(0, 384, (2, 8), generator=gen)
    target = TaskTarget(position=torch.tensor([7, 6]), correct=torch.tensor([11, 12]), incorrect=torch.tensor([13, 14]))
    batches = [ReferenceBatch(ids[b : b + 1], target=TaskTarget(*(t[b : b + 1] for t in (
        target.position, target.correct, target.incorrect))), corrupted_input_ids=corrupted[b : b + 1]) for b in range(2)]
    result = score_model(tiny_llama, batches, "lrp", granularities={"neuron", "head"}, target="task_logit_diff",
                         progress=False, baseline=baseline, aggregation=aggregation)
    clean = [reference_relevance(tiny_llama, ids[b : b + 1], None) for b in range(2)]
    if baseline == "corrupted":
        bases = [reference_relevance(tiny_llama, corrupted[b : b + 1], None) for b in range(2)]
    else:
        means = {i: tuple(torch.cat([c[i][k] for c in clean]).mean(0) for k in (0, 1)) for i in clean[0]}
        bases = [means, means]
    per_sample = [reference_relevance(tiny_llama, ids[b : b + 1], _logit_diff(target, b), bases[b]) for b in range(2)]
    plain = score_model(tiny_llama, batches, "lrp", granularities={"head"}, target="task_logit_diff",
                        progress=False, aggregation=aggregation).scores
    for layer in (0, 1):
        for kind, scores in ((1, result.scores.neurons), (2, result.scores.heads)):
            mean = torch.stack([aggregate(sample[kind][layer], aggregation) for sample in per_sample]).mean(0)
            torch.testing.assert_close(scores[layer], finish(mean, aggregation).float(), rtol=1e-3, atol=1e-6)
        assert not torch.allclose(plain.heads[layer], result.scores.heads[layer], rtol=1e-2)


def test_a_baseline_is_refused_for_weights_and_corrupted_needs_counterparts(tiny_llama):
    windows = torch.randint(0, 384, (1, 6), generator=torch.Generator().manual_seed(8))
    with pytest.raises(ExciseError, match="weights are scored from zero"):
        score_model(tiny_llama, windows, "lrp", granularities={"weight", "head"}, progress=False, baseline="mean")
    with pytest.raises(ExciseError, match="corrupted counterpart"):
        score_model(tiny_llama, windows, "lrp", granularities={"head"}, progress=False, baseline="corrupted")


def test_lrp_next_token_margin_target(tiny_llama):
    """Started at each token's margin over the expected logit: the reference differentiates the
    margin written out in float64, with the distribution held fixed."""
    windows = torch.randint(0, 384, (2, 9), generator=torch.Generator().manual_seed(4))
    result = score_model(tiny_llama, windows, "lrp", granularities={"weight", "neuron"}, target="next_token_margin",
                         batch_size=2, progress=False)

    def margin(ids):
        def objective(logits):
            z = logits[0, :-1]
            expected = (z.softmax(-1).detach() * z).sum(-1)
            return (z.gather(-1, ids[0, 1:, None]).squeeze(-1) - expected).sum()
        return objective

    per_sample = [reference_relevance(tiny_llama, w[None], margin(w[None])) for w in windows]
    plain = score_model(tiny_llama, windows, "lrp", granularities={"neuron"}, batch_size=2, progress=False).scores
    for layer in (0, 1):
        expected = torch.stack([aggregate(sample[1][layer], "absolute") for sample in per_sample]).mean(0).float()
        torch.testing.assert_close(result.scores.neurons[layer], expected, rtol=1e-3, atol=1e-6)
        assert not torch.allclose(plain.neurons[layer], expected, rtol=1e-2)
    for key, score in result.scores.weights.items():
        expected = torch.stack([aggregate(sample[0][key], "absolute") for sample in per_sample]).mean(0).float()
        torch.testing.assert_close(score, expected, rtol=1e-3, atol=1e-6)


def test_signed_weight_relevance_of_a_column_equals_its_unit_relevance(tiny_llama):
    """Conservation through the output projections: the signed relevances of the weights that
    read neuron j (column j of down_proj) sum to the neuron's relevance a_j * a_j.grad; same
    for a head's o_proj columns."""
    windows = torch.randint(0, 384, (1, 12), generator=torch.Generator().manual_seed(3))
    scores = score_model(
        tiny_llama, windows, "lrp", granularities={"weight", "neuron", "head"}, progress=False, aggregation="signed"
    ).scores
    for layer in get_adapter(tiny_llama).layers():
        down = scores.weights[f"model.layers.{layer.index}.mlp.down_proj.weight"]
        torch.testing.assert_close(down.sum(0), scores.neurons[layer.index], rtol=1e-4, atol=1e-5)
        o = scores.weights[f"model.layers.{layer.index}.self_attn.o_proj.weight"]
        per_head = o.sum(0).view(layer.attention.num_heads, -1).sum(-1)
        torch.testing.assert_close(per_head, scores.heads[layer.index], rtol=1e-4, atol=1e-5)


def test_lrp_rules_conserve_relevance_in_closed_form(tiny_llama):
    """Where AttnLRP is conservative the signed weight relevances obey exact laws per sample:
    SiLU's identity rule and the halved gate*up product give gate_proj and up_proj half of
    down_proj's relevance each; the halved value path gives v_proj half of o_proj's (the other
    half goes through softmax to q and k, where it is not conserved). Plain gradient x input
    breaks both laws, so this fails if the rules are not in force."""
    windows = torch.randint(0, 384, (1, 12), generator=torch.Generator().manual_seed(6))
    weights = score_model(tiny_llama, windows, "lrp", progress=False, aggregation="signed").scores.weights

    def total(layer: int, module: str) -> torch.Tensor:
        return weights[f"model.layers.{layer}.{module}.weight"].double().sum()

    for layer in (0, 1):
        down, o = total(layer, "mlp.down_proj"), total(layer, "self_attn.o_proj")
        torch.testing.assert_close(total(layer, "mlp.gate_proj"), down / 2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(total(layer, "mlp.up_proj"), down / 2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(total(layer, "self_attn.v_proj"), o / 2, rtol=1e-4, atol=1e-5)
    # the same laws for plain gradient x input (no rules) do not hold
    plain = copy.deepcopy(tiny_llama).double()
    _next_token(windows)(plain(windows).logits).backward()
    mlp = plain.model.layers[0].mlp
    gate, down = ((m.weight * m.weight.grad).sum().item() for m in (mlp.gate_proj, mlp.down_proj))
    assert abs(gate - down / 2) > 1e-3 * abs(down)
