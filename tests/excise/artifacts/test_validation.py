"""The artifact contract checks the contents of every kind a manifest may name."""

from typing import get_args

from excise.artifacts import validation
from excise.artifacts.manifest import ArtifactKind


def test_every_kind_has_a_contents_check():
    kinds = set(get_args(ArtifactKind))
    assert kinds == validation.MASK_KINDS | set(validation.FORMAT_CHECKS)
    assert not validation.MASK_KINDS & set(validation.FORMAT_CHECKS)
