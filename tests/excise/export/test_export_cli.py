"""Bad input through the CLI: one line, exit 2, the previous output intact."""

import shutil

import pytest

from excise.cli.main import main
from excise.artifacts.manifest import Manifest
from tiny_models import build_tiny_llama

from export_helpers import neuron_masks, row_masks


@pytest.fixture
def exported(tiny_llama_dir, mask_artifact, tmp_path, capsys):
    """A mask artifact (on a private copy of the tiny model) and a previous export of it in `out`."""
    base = tmp_path / "base"
    shutil.copytree(tiny_llama_dir, base)
    artifact = mask_artifact(base, neuron_masks(2, 128, 8))
    out = tmp_path / "out"
    assert main(["export", str(artifact), "--to", "hf", "--out", str(out)]) == 0
    capsys.readouterr()
    return base, artifact, out, Manifest.load(out).files


def fails(capsys, *args, message):
    capsys.readouterr()  # drop what the setup printed
    assert main(["export", *map(str, args)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("excise: error:"), errors
    assert message in errors[0], errors[0]


def intact(out, files):
    assert Manifest.load(out, verify=True).files == files
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")]  # no leftover temporary folder


def test_export_from_the_cli(exported, capsys):
    _, artifact, out, _ = exported
    assert main(["export", str(artifact), "--to", "lora", "--out", str(out.with_name("lora"))]) == 0
    assert "lora: {'rank': 8, 'max_removed_neurons': 8}" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_damaged_artifact(exported, capsys, damage):
    _, artifact, out, files = exported
    path = artifact / "masks.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-10] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
    fails(capsys, artifact, "--to", "hf", "--out", out, "--force", message="does not match its hash")
    intact(out, files)


def test_masks_for_a_different_base_model(exported, capsys):
    base, artifact, out, files = exported
    build_tiny_llama(base, seed=1)  # same architecture, other weights
    fails(capsys, artifact, "--to", "hf", "--out", out, "--force", message="made for a base model with weights sha256")
    intact(out, files)


def test_lora_of_an_unstructured_mask(exported, mask_artifact, capsys):
    base, _, out, files = exported
    unstructured = mask_artifact(base, row_masks(base, 0.5), name="rows")
    fails(capsys, unstructured, "--to", "lora", "--out", out, "--force", message="not a neuron-only mask")
    intact(out, files)


def test_existing_target_needs_force(exported, capsys):
    _, artifact, out, files = exported
    fails(capsys, artifact, "--to", "sparse", "--out", out, message="already exists")
    intact(out, files)
    assert main(["export", str(artifact), "--to", "sparse", "--out", str(out), "--force"]) == 0
    assert Manifest.load(out).kind == "sparse"


def test_a_sparse_checkpoint_only_goes_back_to_dense(exported, capsys, tmp_path):
    _, artifact, _, _ = exported
    assert main(["export", str(artifact), "--to", "sparse", "--out", str(tmp_path / "sparse")]) == 0
    fails(capsys, tmp_path / "sparse", "--to", "lora", "--out", tmp_path / "x", message="exports to: hf")
    fails(capsys, tmp_path / "sparse", "--to", "hf", "--out", tmp_path / "x", "--dtype", "bfloat16", message="drop --dtype")
