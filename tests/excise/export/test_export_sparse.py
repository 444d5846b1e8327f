import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from excise.errors import ExciseError
from excise.export.pipeline import export_artifact
from excise.artifacts.sparse import BITMASK, METADATA_KEY, VALUES, decode_file
from excise.artifacts.manifest import Manifest

from export_helpers import row_masks


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sparse_round_trip_is_bit_exact(tiny_model_dir, mask_artifact, tmp_path, dtype):
    artifact = mask_artifact(tiny_model_dir, row_masks(tiny_model_dir, 0.5))
    export_artifact(artifact, "hf", tmp_path / "direct", dtype=dtype)
    export_artifact(artifact, "sparse", tmp_path / "sparse", dtype=dtype)
    export_artifact(tmp_path / "sparse", "hf", tmp_path / "restored")

    direct = load_file(tmp_path / "direct" / "model.safetensors")
    restored = load_file(tmp_path / "restored" / "model.safetensors")
    assert direct.keys() == restored.keys()
    integer = torch.int32 if dtype == "float32" else torch.int16
    for name, tensor in direct.items():
        assert restored[name].dtype == tensor.dtype
        assert torch.equal(restored[name].view(integer), tensor.view(integer)), name  # bits, signs of zeros included
    config = json.loads((tmp_path / "restored" / "config.json").read_text())
    assert config == json.loads((tmp_path / "direct" / "config.json").read_text())


@pytest.mark.parametrize(("dtype", "bytes_per_value"), [("float32", 4), ("bfloat16", 2)])
def test_sparse_size_at_half_sparsity(tiny_llama_dir, mask_artifact, tmp_path, dtype, bytes_per_value):
    masks = row_masks(tiny_llama_dir, 0.5)
    manifest = export_artifact(mask_artifact(tiny_llama_dir, masks), "sparse", tmp_path / "sparse", dtype=dtype)
    size = manifest.metrics["sparse_size"]
    numel = sum(mask.numel() for mask in masks.weights.values())
    # closed form: half the values plus one bit per weight (every tiny-model row length is a multiple of 16)
    assert size["pruned_tensors_sparse_bytes"] == numel // 2 * bytes_per_value + numel // 8
    assert size["pruned_tensors_ratio"] == pytest.approx(0.5 + 1 / (8 * bytes_per_value), abs=1e-4)
    assert size["pruned_tensors_ratio"] <= 0.57
    assert size["sparse_bytes"] == (tmp_path / "sparse" / "model.safetensors").stat().st_size < size["dense_bytes"]
    with safe_open(tmp_path / "sparse" / "model.safetensors", framework="pt") as handle:
        keys = set(handle.keys())
        header = json.loads(handle.metadata()[METADATA_KEY])
    name = "model.layers.0.mlp.down_proj.weight"
    assert {name + VALUES, name + BITMASK} <= keys and name not in keys
    assert header["format_version"] == 1 and header["tensors"][name] == [64, 128]


def test_sparse_manifest_records_format_and_hashes(tiny_llama_dir, mask_artifact, tmp_path):
    export_artifact(mask_artifact(tiny_llama_dir, row_masks(tiny_llama_dir, 0.3)), "sparse", tmp_path / "sparse")
    manifest = Manifest.load(tmp_path / "sparse", verify=True)
    assert manifest.kind == "sparse"
    assert {"model.safetensors", "config.json", "README.md"} <= set(manifest.files)


def test_newer_sparse_format_is_refused(tiny_llama_dir, mask_artifact, tmp_path):
    export_artifact(mask_artifact(tiny_llama_dir, row_masks(tiny_llama_dir, 0.5)), "sparse", tmp_path / "sparse")
    path = tmp_path / "sparse" / "model.safetensors"
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    header = json.loads(metadata[METADATA_KEY]) | {"format_version": 2}
    save_file(load_file(path), tmp_path / "newer.safetensors", metadata=metadata | {METADATA_KEY: json.dumps(header)})
    with pytest.raises(ExciseError, match="sparse format version 2, newer than this excise reads"):
        decode_file(tmp_path / "newer.safetensors")
