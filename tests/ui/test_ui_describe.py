"""What the artifacts view calls each variant (`server.ui_routes.describe`), for the bases `make serve`
and a config name: an embedded model by name, a model folder, a `weights:` export, a correction."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from excise.artifacts.model_folder import embedded_path
from server.config import EngineOptions
from server.engines import EngineSpec
from server.ui_routes import describe
from server.variants import Variant


def _ctx(engines: dict[str, Path]):
    specs = {key: EngineSpec(key=key, model_path=path, options=EngineOptions(), enable_lora=True)
             for key, path in engines.items()}
    return SimpleNamespace(pool=SimpleNamespace(specs=specs))


@pytest.fixture
def home(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_embedded_model_served_by_name_is_a_base_model(home):
    # make serve: `smollm2` runs on its prepared folder under EXCISE_HOME; it was shown as an "exported model"
    ctx = _ctx({"smollm2": embedded_path("smollm2")})
    info = describe(ctx, Variant(name="smollm2", engine_key="smollm2", base="smollm2"))
    assert (info.kind, info.base, info.weights) == ("base", "smollm2", "smollm2")


def test_a_model_folder_is_a_base_and_weights_of_another_folder_are_an_export(home):
    base, pruned = home / "models" / "tiny", home / "exports" / "tiny-pruned"
    ctx = _ctx({"tiny": base, "tiny-pruned": pruned})
    assert describe(ctx, Variant(name="tiny", engine_key="tiny", base=str(base))).kind == "base"
    # `weights:` served unverified (no manifest): still an export, by its folder
    info = describe(ctx, Variant(name="pruned", engine_key="tiny-pruned", base="smollm2", verified=False))
    assert (info.kind, info.weights) == ("export", "tiny-pruned")


def test_a_correction_is_a_correction(home):
    ctx = _ctx({"smollm2": embedded_path("smollm2")})
    info = describe(ctx, Variant(name="detox", engine_key="smollm2", base="smollm2", correction=home / "detox"))
    assert (info.kind, info.correction) == ("correction", "detox")
