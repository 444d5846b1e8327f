"""The greedy pass: lowest score first, a removal kept only while the circuit still passes."""

from __future__ import annotations

import torch

from excise.artifacts.masks import MaskSet
from excise.artifacts.scores import Scores
from excise.circuits.greedy import greedy_removal
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.tasks.metrics import TaskScore


def test_greedy_tries_units_lowest_score_first_and_keeps_only_passing_removals(tiny_llama_dir):
    adapter = get_adapter(load_model(tiny_llama_dir).model)  # 2 layers x 4 heads
    scores = Scores(heads={0: torch.tensor([5.0, 1.0, 7.0, 2.0]), 1: torch.tensor([3.0, 8.0, 4.0, 6.0])})
    start = MaskSet(heads={0: torch.tensor([True, True, True, True]), 1: torch.tensor([False, True, True, True])})
    needed = {(0, 3), (1, 2)}  # the circuit passes while both of these are kept
    tried = []

    def evaluate(masks: MaskSet) -> TaskScore:
        removed = {(layer, unit) for layer, mask in masks.heads.items() for unit in (~mask).nonzero().flatten().tolist()}
        tried.append(removed)
        return TaskScore(logit_diff=0.0 if removed & needed else 1.0, accuracy=1.0, top1=1.0, count=1, logit_diff_sem=0.0)

    masks, counts = greedy_removal(adapter, start, scores, "head", 4, 0.5, evaluate)
    # kept units by score: (0,1)=1, (0,3)=2, (1,2)=4, (0,0)=5, ...; the first four are tried, in that order
    assert [sorted(t - {(1, 0)}) for t in tried] == [[(0, 1)], [(0, 1), (0, 3)], [(0, 1), (1, 2)], [(0, 0), (0, 1)]]
    assert counts == {"tries": 4, "removed": 2}
    assert masks.heads[0].tolist() == [False, False, True, True] and masks.heads[1].tolist() == [False, True, True, True]
    assert start.heads[0].all()  # the sweep's masks are not changed in place
