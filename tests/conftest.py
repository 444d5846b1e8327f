"""Shared fixtures: tiny random models (fast) and the real embedded SmolLM2 (slow tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_opt_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_opt(tmp_path_factory.mktemp("tiny-opt"))


@pytest.fixture(scope="session", params=["llama", "qwen2", "opt"])
def tiny_model_dir(request) -> Path:
    """Each tiny family in turn, for tests that must hold for every adapter."""
    return request.getfixturevalue(f"tiny_{request.param}_dir")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real embedded model, prepared once into EXCISE_HOME (about 35 s the first time)."""
    from excise.models.loading import resolve_model_path

    return resolve_model_path("smollm2")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    from excise.models.loading import load_model

    return load_model(smollm2_dir)
