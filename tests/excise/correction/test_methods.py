"""The benchmark's rankings: an order of neurons whose first K are budget K's edit."""

import pytest
import torch

from excise.artifacts.scores import Scores
from excise.correction.contrast import remove_lowest
from excise.correction.methods import MethodSpec, Ranking, _removed_first
from excise.evaluation.neuron_scales import NeuronScales


def test_a_ranking_edits_its_first_k_neurons_as_remove_lowest_removes_them():
    contrast = {0: torch.tensor([0.3, -1.0, 0.3]), 1: torch.tensor([0.3, -2.0])}
    ranking = Ranking(_removed_first(contrast), {0: 3, 1: 2}, seconds=0.0)
    # lowest first; the three ties at 0.3 go by layer, then index
    assert ranking.order == [(1, 1, 0.0), (0, 1, 0.0), (0, 0, 0.0), (0, 2, 0.0), (1, 0, 0.0)]
    for budget in range(6):
        expected = NeuronScales.from_masks(remove_lowest(Scores(neurons=contrast), "neuron", budget))
        edit = ranking.edit(budget)
        assert all(torch.equal(edit.scales[layer], expected.scales[layer]) for layer in (0, 1)), budget
    assert torch.equal(ranking.edit(3).scales[0], torch.tensor([0.0, 0.0, 1.0]))


def test_a_dampening_ranking_keeps_each_neurons_scale():
    ranking = Ranking([(1, 0, 0.2), (0, 2, 0.5)], {0: 3, 1: 1}, seconds=0.0)
    assert torch.equal(ranking.edit(1).scales[1], torch.tensor([0.2])) and ranking.edit(1).changed() == 1
    assert torch.equal(ranking.edit(5).scales[0], torch.tensor([1.0, 1.0, 0.5]))  # fewer neurons than the budget: all


def test_dampening_by_the_contrast_scales_each_neuron_by_one_plus_its_score():
    contrast = {0: torch.tensor([-0.9, 0.2, -0.25]), 1: torch.tensor([-1.5])}
    ranking = Ranking(_removed_first(contrast, dampen=True), {0: 3, 1: 1}, seconds=0.0)
    # lowest first; 1 + score, clamped to [0, 1] (-1.5 -> removed, 0.2 -> untouched)
    assert ranking.order == [(1, 0, 0.0), (0, 0, pytest.approx(0.1)), (0, 2, 0.75), (0, 1, 1.0)]
    assert torch.allclose(ranking.edit(3).scales[0], torch.tensor([0.1, 1.0, 0.75]))


def test_dampening_needs_the_relative_rule():
    with pytest.raises(ValueError, match="relative rule"):
        MethodSpec("x", "contrast", dampen=True, normalise="overall")
