"""Selections hit the requested count exactly and remove the lowest scores; masks apply exactly."""

from __future__ import annotations

import pytest
import torch

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.artifacts.scores import Scores
from excise.selection import SELECTIONS, get_selection, removal_count
from excise.selection.row import RowSelection

SPARSITIES = [0.0, 0.3, 0.5, 0.6, 0.9]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir):
    return get_adapter(load_model(tiny_model_dir).model)


def random_scores(adapter, seed: int = 0, integer: bool = False) -> Scores:
    """Scores for every granularity; `integer` draws from 0..3 so that ties are everywhere."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        if integer:
            return torch.randint(0, 4, shape, generator=generator).float()
        return torch.rand(*shape, generator=generator)

    scores = Scores()
    for name, module in adapter.prunable_linears().items():
        scores.weights[f"{name}.weight"] = draw(*module.weight.shape)
    for layer in adapter.layers():
        scores.neurons[layer.index] = draw(layer.mlp.num_neurons)
        scores.heads[layer.index] = draw(layer.attention.num_heads)
    return scores


def magnitude_scores(adapter) -> Scores:
    linears = adapter.prunable_linears()
    return Scores(weights={f"{name}.weight": module.weight.detach().abs().clone() for name, module in linears.items()})


def assert_lowest_removed(score: torch.Tensor, keep: torch.Tensor) -> None:
    """Every removed score is <= every kept score of the same group (group = last dim)."""
    removed_max = torch.where(keep, torch.full_like(score, -torch.inf), score).amax(dim=-1)
    kept_min = torch.where(keep, score, torch.full_like(score, torch.inf)).amin(dim=-1)
    assert (removed_max <= kept_min).all()


def test_removal_count_rounds_half_up_and_absorbs_float_error():
    assert removal_count(1536, 0.3) == 461  # 460.8
    assert removal_count(10, 0.3) == 3  # 0.3 * 10 = 3.0000000000000004
    assert removal_count(3, 0.5) == 2
    assert removal_count(576, 0.5) == 288
    assert removal_count(100, 0.0) == 0


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("integer", [False, True], ids=["distinct", "ties"])
def test_row_exact_per_row(adapter, sparsity, integer):
    scores = random_scores(adapter, integer=integer)
    masks = get_selection("row")(scores, adapter, sparsity)
    assert set(masks.weights) == {f"{n}.weight" for n in adapter.prunable_linears()}
    for name, keep in masks.weights.items():
        rows, cols = keep.shape
        assert ((~keep).sum(dim=1) == removal_count(cols, sparsity)).all(), name
        assert_lowest_removed(scores.weights[name], keep)


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("integer", [False, True], ids=["distinct", "ties"])
def test_layer_exact_per_tensor(adapter, sparsity, integer):
    scores = random_scores(adapter, integer=integer)
    masks = get_selection("layer")(scores, adapter, sparsity)
    for name, keep in masks.weights.items():
        assert int((~keep).sum()) == removal_count(keep.numel(), sparsity)
        assert_lowest_removed(scores.weights[name].flatten(), keep.flatten())


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("integer", [False, True], ids=["distinct", "ties"])
def test_global_exact_overall_one_threshold(adapter, sparsity, integer):
    scores = random_scores(adapter, integer=integer)
    masks = get_selection("global")(scores, adapter, sparsity)
    keep = torch.cat([m.flatten() for m in masks.weights.values()])
    flat = torch.cat([scores.weights[name].flatten() for name in masks.weights])
    assert int((~keep).sum()) == removal_count(flat.numel(), sparsity)
    assert_lowest_removed(flat, keep)
    expected = removal_count(flat.numel(), sparsity) / flat.numel()
    assert masks.sparsity_report(adapter)["overall"] == pytest.approx(expected)


def test_global_differs_from_row_when_tensors_are_scaled(adapter):
    """With one tensor's scores scaled down, global cuts mostly there; row does not care."""
    scores = random_scores(adapter)
    first = next(iter(scores.weights))
    scores.weights[first] = scores.weights[first] * 1e-3
    global_masks = get_selection("global")(scores, adapter, 0.3)
    assert float((~global_masks.weights[first]).float().mean()) > 0.9
    row_masks = get_selection("row")(scores, adapter, 0.3)
    assert float((~row_masks.weights[first]).float().mean()) == pytest.approx(
        removal_count(scores.weights[first].shape[1], 0.3) / scores.weights[first].shape[1]
    )


@pytest.mark.parametrize(("sparsity", "m"), [(0.5, 4), (0.75, 4), (0.25, 4), (0.5, 8)])
def test_nm_pattern_exact_in_every_block(adapter, sparsity, m):
    scores = random_scores(adapter, integer=True)
    masks = get_selection("nm")(scores, adapter, sparsity, {"m": m})
    for name, keep in masks.weights.items():
        blocks = keep.view(keep.shape[0], -1, m)
        assert ((~blocks).sum(dim=-1) == round(sparsity * m)).all(), name
        assert_lowest_removed(scores.weights[name].view(keep.shape[0], -1, m), blocks)


def test_nm_refuses_a_sparsity_that_is_no_pattern(adapter):
    with pytest.raises(ExciseError, match="multiple of 1/4"):
        get_selection("nm")(random_scores(adapter), adapter, 0.3)


def test_nm_refuses_unknown_params(adapter):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        get_selection("nm")(random_scores(adapter), adapter, 0.5, {"n": 2})


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.6])
def test_neuron_removes_exact_count_per_layer(adapter, sparsity):
    scores = random_scores(adapter)
    masks = get_selection("neuron")(scores, adapter, sparsity)
    assert not masks.weights and not masks.heads
    for layer in adapter.layers():
        keep = masks.neurons[layer.index]
        assert int((~keep).sum()) == removal_count(layer.mlp.num_neurons, sparsity)
        assert_lowest_removed(scores.neurons[layer.index], keep)


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_head_removes_whole_kv_groups(adapter, sparsity):
    scores = random_scores(adapter)
    masks = get_selection("head")(scores, adapter, sparsity)
    for layer in adapter.layers():
        attention = layer.attention
        keep = masks.heads[layer.index].view(attention.num_kv_heads, attention.heads_per_group)
        assert (keep.all(dim=1) | (~keep).all(dim=1)).all(), "a KV group was split"
        group_keep = keep[:, 0]
        assert int((~group_keep).sum()) == removal_count(attention.num_kv_heads, sparsity)
        group_scores = scores.heads[layer.index].view(attention.num_kv_heads, -1).sum(dim=1)
        assert_lowest_removed(group_scores, group_keep)


def test_head_under_gqa_zeroes_the_group_kv_rows(tiny_llama_dir):
    adapter = get_adapter(load_model(tiny_llama_dir).model)
    attention = adapter.layers()[0].attention
    assert attention.num_kv_heads < attention.num_heads  # the tiny llama uses GQA: 4 heads, 2 KV groups
    scores = random_scores(adapter)
    scores.heads[0] = torch.tensor([5.0, 5.0, 1.0, 1.0])  # group 1 (heads 2, 3) is the least relevant
    masks = get_selection("head")(scores, adapter, 0.5)
    assert masks.heads[0].tolist() == [True, True, False, False]
    masks.apply(adapter)
    d = attention.head_dim
    assert (attention.k_proj.weight[d:] == 0).all() and (attention.v_proj.weight[d:] == 0).all()
    assert (attention.q_proj.weight[2 * d :] == 0).all() and (attention.o_proj.weight[:, 2 * d :] == 0).all()
    assert (attention.k_proj.weight[:d] != 0).any()


@pytest.mark.parametrize("granularity", ["row", "layer", "global", "nm"])
def test_apply_zeroes_exactly_the_pruned_weights(tiny_model_dir, granularity):
    """Pruned weights become exactly 0; every other parameter stays bit-identical (magnitude scores)."""
    adapter = get_adapter(load_model(tiny_model_dir).model)
    before = {name: p.detach().clone() for name, p in adapter.model.named_parameters()}
    masks = get_selection(granularity)(magnitude_scores(adapter), adapter, 0.5)
    masks.apply(adapter)
    for name, param in adapter.model.named_parameters():
        if name in masks.weights:
            keep = masks.weights[name]
            assert (param[~keep] == 0).all(), name
            assert torch.equal(param[keep], before[name][keep]), name
        else:
            assert torch.equal(param, before[name]), name
    # magnitude: every removed weight was no larger than every kept weight of its row (row) / tensor
    if granularity == "row":
        for name, keep in masks.weights.items():
            assert_lowest_removed(before[name].abs(), keep)


def test_apply_neurons_zeroes_rows_and_columns(tiny_model_dir):
    adapter = get_adapter(load_model(tiny_model_dir).model)
    before = {name: p.detach().clone() for name, p in adapter.model.named_parameters()}
    masks = get_selection("neuron")(random_scores(adapter), adapter, 0.5)
    masks.apply(adapter)
    for layer in adapter.layers():
        removed = ~masks.neurons[layer.index]
        for projection in layer.mlp.inputs:
            assert (projection.weight[removed] == 0).all()
            dense = before[adapter.module_name(projection) + ".weight"]
            assert torch.equal(projection.weight[~removed], dense[~removed])
        assert (layer.mlp.output.weight[:, removed] == 0).all()


def test_missing_or_broken_scores_are_refused(adapter):
    scores = random_scores(adapter)
    name = next(iter(scores.weights))
    broken = Scores(weights=dict(scores.weights))
    broken.weights[name] = broken.weights[name].clone()
    broken.weights[name][0, 0] = float("nan")
    with pytest.raises(ExciseError, match="NaN"):
        get_selection("row")(broken, adapter, 0.5)
    del broken.weights[name]
    with pytest.raises(ExciseError, match="no entry"):
        get_selection("row")(broken, adapter, 0.5)
    with pytest.raises(ExciseError, match="neuron"):
        get_selection("neuron")(Scores(weights=scores.weights), adapter, 0.5)
    wrong = Scores(weights={k: v[1:] if k == name else v for k, v in scores.weights.items()})
    with pytest.raises(ExciseError, match="shape"):
        get_selection("layer")(wrong, adapter, 0.5)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_range_is_refused(adapter, sparsity):
    with pytest.raises(ExciseError, match=r"\[0, 1\)"):
        get_selection("row")(random_scores(adapter), adapter, sparsity)


def test_registry_refuses_unknown_and_duplicate_names():
    with pytest.raises(ExciseError, match="row, layer, global"):
        get_selection("diagonal")
    with pytest.raises(ValueError, match="already registered"):
        SELECTIONS.add("row", RowSelection())
    assert list(SELECTIONS) == ["row", "layer", "global", "neuron", "head", "nm"]


def test_masks_round_trip_through_disk(adapter, tmp_path):
    masks = get_selection("row")(random_scores(adapter), adapter, 0.5)
    masks.neurons = get_selection("neuron")(random_scores(adapter), adapter, 0.5).neurons
    masks.save(tmp_path)
    loaded = MaskSet.load(tmp_path)
    assert loaded.weights.keys() == masks.weights.keys()
    assert all(torch.equal(loaded.weights[k], masks.weights[k]) for k in masks.weights)
    assert all(torch.equal(loaded.neurons[k], masks.neurons[k]) for k in masks.neurons)


def test_relevance_allocation_worked_example(tiny_llama_dir):
    """Two equal layers; layer 0's scores are 3x layer 1's per weight: d = (3, 1), mean 2, spread 1,
    so layer 0 (more relevant) is pruned at s - delta and layer 1 at s + delta; overall stays s."""
    adapter = get_adapter(load_model(tiny_llama_dir).model)
    scores = Scores()
    for name, module in adapter.prunable_linears().items():
        level = 3.0 if ".layers.0." in name else 1.0
        scores.weights[f"{name}.weight"] = torch.full(module.weight.shape, level)
    masks = get_selection("row")(scores, adapter, 0.5, {"allocation": "relevance", "delta": 0.1})
    for name, keep in masks.weights.items():
        share = 0.4 if ".layers.0." in name else 0.6
        assert ((~keep).sum(1) == removal_count(keep.shape[1], share)).all(), name
    report = masks.sparsity_report(adapter)
    assert report["overall"] == pytest.approx(0.5, abs=1e-3)


def test_uniform_allocation_is_the_plain_row_cut(adapter):
    scores = random_scores(adapter, seed=4)
    plain = get_selection("row")(scores, adapter, 0.5)
    uniform = get_selection("row")(scores, adapter, 0.5, {"allocation": "uniform", "delta": 0.2})
    assert all(torch.equal(plain.weights[n], uniform.weights[n]) for n in plain.weights)
    with pytest.raises(Exception, match="allocation"):
        get_selection("row")(scores, adapter, 0.5, {"allocation": "outliers"})
