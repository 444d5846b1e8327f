import json
import shutil
import sys
import textwrap

import pytest

from excise.errors import ExciseError
from excise.models import embedded
from excise.models.loading import load_model, resolve_model_path, validate_model_folder


@pytest.fixture
def model_copy(tiny_llama_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, target)
    return target


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_valid_folder_loads(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    assert loaded.model.config.model_type == "llama"
    assert loaded.path == tiny_llama_dir


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "no config.json"),
        (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda f: edit_config(f, auto_map={"AutoModelForCausalLM": "x.Y"}), "never runs remote code"),
        (lambda f: edit_config(f, model_type="gpt_neox"), "not supported; supported:"),
        (lambda f: edit_config(f, sparsity_config={"format": "dense"}), "sparsity_config"),
        (lambda f: edit_config(f, quantization_config={"quant_method": "awq"}), "quantization_config"),
        (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "pickle files"),
    ],
)
def test_bad_model_folders_are_refused(model_copy, change, message):
    change(model_copy)
    with pytest.raises(ExciseError, match=message):
        validate_model_folder(model_copy)


def test_unknown_name_is_refused():
    with pytest.raises(ExciseError, match="neither a folder nor a known name.*smollm2"):
        resolve_model_path("no-such-model")


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    """An embedded model whose package ships a corrupt GGUF, with an empty EXCISE_HOME."""
    package = tmp_path / "site" / "fake_gguf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent("raise ImportError('never imported')\n"))
    (package / "model.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))
    spec = embedded.EmbeddedModel(name="fake", package="fake_gguf_pkg", gguf_file="model.gguf", description="x")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "fake", spec)
    yield spec
    sys.modules.pop("fake_gguf_pkg", None)


def test_corrupt_gguf_gives_clear_error_and_leaves_no_files(fake_embedded, tmp_path):
    with pytest.raises(ExciseError, match="cannot read .*model.gguf"):
        embedded.prepare_embedded("fake")
    models = tmp_path / "home" / "models"
    assert not models.exists() or not any(models.iterdir())


def test_missing_gguf_package_is_explained(fake_embedded, monkeypatch):
    monkeypatch.setitem(
        embedded.EMBEDDED_MODELS, "fake", embedded.EmbeddedModel("fake", "no_such_pkg_x", "m.gguf", "x")
    )
    with pytest.raises(ExciseError, match="not installed; run `make install`"):
        embedded.prepare_embedded("fake")


def test_unknown_embedded_name():
    with pytest.raises(ExciseError, match="unknown embedded model"):
        embedded.prepare_embedded("gpt5")


@pytest.mark.slow
def test_embedded_smollm2_is_prepared_once(smollm2_dir):
    marker = smollm2_dir / embedded.MARKER
    before = marker.stat().st_mtime_ns
    assert embedded.prepare_embedded("smollm2") == smollm2_dir
    assert marker.stat().st_mtime_ns == before
    record = json.loads(marker.read_text())
    assert record["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(record["weights_sha256"]) == 64
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
