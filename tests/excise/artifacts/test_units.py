"""`Scores` and `MaskSet` share one layout (`UnitTensors`): what is saved is what is loaded."""

import pytest
import torch
from safetensors.torch import save_file

from excise.artifacts.masks import MASKS_FILE, MaskSet
from excise.artifacts.scores import SCORES_FILE, Scores
from excise.artifacts.units import UNITS, UnitTensors
from excise.errors import ExciseError


def _tensors(kind):
    generator = torch.Generator().manual_seed(0)
    make = (lambda *shape: torch.rand(*shape, generator=generator) > 0.5) if kind is MaskSet else (
        lambda *shape: torch.randn(*shape, generator=generator)
    )
    return kind(
        weights={"model.layers.0.mlp.down_proj.weight": make(4, 9), "model.layers.1.self_attn.q_proj.weight": make(3, 5)},
        neurons={0: make(11), 12: make(11)},
        heads={1: make(4)},
    )


def test_units_are_the_fields_in_order():
    assert UNITS == ("weight", "neuron", "head")
    held = UnitTensors(weights={"w": torch.ones(1)}, neurons={3: torch.ones(2)}, heads={})
    assert list(held.per_unit()) == list(UNITS)
    assert set(held.entries()) == {"weight/w", "neuron/3"}


@pytest.mark.parametrize("kind", [Scores, MaskSet])
def test_round_trip(kind, tmp_path):
    held = _tensors(kind)
    held.save(tmp_path)
    again = kind.load(tmp_path)
    assert type(again) is kind
    for unit in UNITS:
        ours, theirs = held.per_unit()[unit], again.per_unit()[unit]
        assert set(theirs) == set(ours)  # layer indices come back as ints
        for key in ours:
            assert theirs[key].dtype == (torch.bool if kind is MaskSet else torch.float32)
            assert torch.equal(theirs[key], ours[key])


def test_masks_are_bit_packed(tmp_path):
    MaskSet(neurons={0: torch.ones(64, dtype=torch.bool)}).save(tmp_path)
    assert (tmp_path / MASKS_FILE).stat().st_size < 64 + 200  # 8 bytes of bits plus the header


@pytest.mark.parametrize(("kind", "name"), [(Scores, SCORES_FILE), (MaskSet, MASKS_FILE)])
def test_unknown_unit_is_refused(kind, name, tmp_path):
    metadata = {"shapes": '{"row/0": [8]}'} if kind is MaskSet else None
    save_file({"row/0": torch.zeros(1, dtype=torch.uint8) if kind is MaskSet else torch.zeros(8)}, tmp_path / name, metadata)
    with pytest.raises(ExciseError, match="unknown kind 'row'"):
        kind.load(tmp_path)


@pytest.mark.parametrize(("kind", "name"), [(Scores, SCORES_FILE), (MaskSet, MASKS_FILE)])
def test_corrupt_file_is_one_error(kind, name, tmp_path):
    (tmp_path / name).write_bytes(b"not safetensors")
    with pytest.raises(ExciseError, match="is not a readable"):
        kind.load(tmp_path)
