"""Weights are pinned by hashing their files (never by a recorded value), cached by file identity."""

from __future__ import annotations

import hashlib
import json
import shutil

from excise.artifacts.hashing import CACHE_NAME, cached_sha256
from excise.models.embedded import MARKER, WEIGHTS
from excise.artifacts.model_folder import weights_sha256


def _flip(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_modified_weights_of_a_prepared_model_no_longer_match(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "prepared")
    recorded = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    (folder / MARKER).write_text(json.dumps({"weights_sha256": recorded}))  # as `models prepare` writes it
    assert weights_sha256(folder) == recorded
    _flip(folder / WEIGHTS)
    assert weights_sha256(folder) == hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest() != recorded


def test_the_cache_is_used_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"weights" * 1000)
    truth = hashlib.sha256(path.read_bytes()).hexdigest()
    assert cached_sha256(path) == truth
    cache_file = tmp_path / "home" / CACHE_NAME
    cache = json.loads(cache_file.read_text())
    cache[str(path.resolve())]["sha256"] = "remembered"
    cache_file.write_text(json.dumps(cache))
    assert cached_sha256(path) == "remembered"  # same file, same stat: not read again
    _flip(path)  # same size, new content
    assert cached_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != truth
