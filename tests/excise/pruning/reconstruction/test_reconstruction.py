"""SparseGPT through `prune`: sequential layer inputs, the reconstruction artifact, its exports."""

from __future__ import annotations

import pytest
import torch

from excise.data.windows import DataSpec, token_windows
from excise.errors import ExciseError
from excise.export.pipeline import export_artifact
from excise.artifacts.sparse import densify  # noqa: F401 - the sparse format must round trip a reconstruction
from excise.artifacts.manifest import Manifest
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.pruning.run import PruneConfig, prune
from excise.pruning.reconstruction import fixed_rules, reconstruct, saliency_rules
from excise.pruning.reconstruction.obs import FixedMask, inverse_hessian_factor, obs_prune
from excise.selection import removal_count
from excise.artifacts.updates import WEIGHTS_FILE, load_weights

CALIBRATION = DataSpec(source="news", split="calibration", count=4, length=32, order="random")
EVALUATION = DataSpec(source="news", split="evaluation", count=2, length=32, order="sequential")


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))


def _windows(loaded):
    return token_windows(loaded.tokenizer, CALIBRATION, max_length=loaded.model.config.max_position_embeddings)


def test_each_layer_is_pruned_from_what_the_pruned_layers_before_it_produce(tiny_model_dir):
    """Replay by hand: capture layer 1's inputs from the model whose layer 0 is already pruned,
    build H, run the OBS step; the library's layer-1 weights must be exactly that."""
    loaded = load_model(tiny_model_dir)
    windows = _windows(loaded)
    result = reconstruct(loaded.model, windows, saliency_rules("row", 0.5), progress=False)

    reference = load_model(tiny_model_dir).model
    adapter = get_adapter(reference)
    layers = adapter.layer_modules()
    names = {n: m for n, m in adapter.prunable_linears().items()}
    with torch.no_grad():
        for name, module in names.items():
            if any(module is m for m in layers[0].modules()):
                module.weight.copy_(result.weights[f"{name}.weight"])
    target_name, target = next((n, m) for n, m in names.items() if any(m is x for x in layers[1].modules()))
    hessian = torch.zeros(target.in_features, target.in_features)
    def accumulate(_module, args):
        flat = args[0].reshape(-1, args[0].shape[-1])  # [tokens, in]
        hessian.addmm_(flat.T, flat)

    handle = target.register_forward_pre_hook(accumulate)
    with torch.no_grad():
        for window in windows:
            reference(input_ids=window[None], use_cache=False)
    handle.remove()
    expected, keep = obs_prune(target.weight.data, inverse_hessian_factor(hessian, 0.01)[0],
                               saliency_rules("row", 0.5)(f"{target_name}.weight", target))
    torch.testing.assert_close(result.weights[f"{target_name}.weight"], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(result.masks.weights[f"{target_name}.weight"], keep)
    for name, kept in result.masks.weights.items():
        assert ((~kept).sum(1) == removal_count(kept.shape[1], 0.5)).all()


def test_fixed_mask_keeps_the_mask_and_moves_kept_weights(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    adapter = get_adapter(loaded.model)
    dense = {n: m.weight.detach().clone() for n, m in adapter.prunable_linears().items()}
    masks = MaskSet(weights={f"{n}.weight": torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5
                             for n, w in dense.items()})
    result = reconstruct(loaded.model, _windows(loaded), fixed_rules(masks), progress=False)
    for name, weight in dense.items():
        keep = masks.weights[f"{name}.weight"]
        assert torch.equal(result.masks.weights[f"{name}.weight"], keep)
        updated = result.weights[f"{name}.weight"]
        assert (updated[~keep] == 0).all() and not torch.allclose(updated[keep], weight[keep])


def test_sparsegpt_artifact_exports_to_hf_and_sparse_identically(tiny_llama_dir, tmp_path):
    out = prune(PruneConfig(model=str(tiny_llama_dir), method="sparsegpt", sparsity=0.5, calibration=CALIBRATION,
                            evaluation=EVALUATION), tmp_path / "sgpt")
    manifest = Manifest.load(out)
    assert manifest.kind == "reconstruction" and manifest.method.name == "sparsegpt"
    assert WEIGHTS_FILE in manifest.files and manifest.method.params["reconstruction"]["damping"] == 0.01
    assert manifest.sparsity["overall"] == 0.5
    hf = export_artifact(out, "hf", tmp_path / "hf")
    sparse = export_artifact(out, "sparse", tmp_path / "sparse")
    back = export_artifact(tmp_path / "sparse", "hf", tmp_path / "back")
    assert hf.kind == "hf" and sparse.kind == "sparse" and back.kind == "hf"
    exported = load_model(tmp_path / "hf").model.state_dict()
    restored = load_model(tmp_path / "back").model.state_dict()
    updated = load_weights(out)
    for name, tensor in updated.items():
        assert torch.equal(exported[name], tensor)  # the re-fitted values, not the base's
        assert torch.equal(restored[name], tensor)  # bit for bit through the sparse checkpoint
    # the exported model is the one whose perplexity the manifest reports
    ids = _windows(load_model(tmp_path / "hf"))
    assert torch.isfinite(load_model(tmp_path / "hf").model(input_ids=ids[:1]).logits).all()
    with pytest.raises(ExciseError, match="cannot export a reconstruction artifact to lora"):
        export_artifact(out, "lora", tmp_path / "lora")


def test_lrp_mask_repaired_by_reconstruction(tiny_llama_dir, tmp_path):
    base = dict(model=str(tiny_llama_dir), method="wanda", sparsity=0.5, calibration=CALIBRATION, evaluation=EVALUATION)
    plain = Manifest.load(prune(PruneConfig(**base), tmp_path / "plain"))
    repaired_dir = prune(PruneConfig(**base, reconstruct=True), tmp_path / "repaired")
    repaired = Manifest.load(repaired_dir)
    assert repaired.kind == "reconstruction" and repaired.method.name == "wanda"
    assert torch.equal(MaskSet.load(repaired_dir).weights[next(iter(load_weights(repaired_dir)))],
                       MaskSet.load(tmp_path / "plain").weights[next(iter(load_weights(repaired_dir)))])
    assert repaired.sparsity == plain.sparsity
    assert "reconstruction_s" in repaired.timings


def test_reconstruction_for_another_base_is_refused(tiny_llama_dir, tiny_qwen2_dir, tmp_path):
    out = prune(PruneConfig(model=str(tiny_llama_dir), method="sparsegpt", sparsity=0.5, calibration=CALIBRATION,
                            evaluation=None), tmp_path / "sgpt")
    manifest = Manifest.load(out)
    manifest.base_model = manifest.base_model.model_copy(update={"spec": str(tiny_qwen2_dir), "path": str(tiny_qwen2_dir)})
    manifest.save(out)
    with pytest.raises(ExciseError, match="was made for a base model with weights sha256"):
        export_artifact(out, "hf", tmp_path / "hf")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"granularity": "neuron"}, "sparsegpt chooses single weights"),
        ({"save_scores": True}, "sparsegpt makes no scores"),
        ({"selection_params": {"allocation": "relevance"}}, "no scores to allocate"),
        ({"method": "wanda", "reconstruct": True, "granularity": "head"}, "re-fits single weights"),
    ],
)
def test_bad_reconstruction_settings_are_refused_by_the_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**({"method": "sparsegpt", "sparsity": 0.5} | overrides))


def test_updated_weights_that_do_not_fit_the_base_are_refused(tiny_llama_dir, tmp_path):
    from safetensors.torch import save_file

    from excise.artifacts.validation import validate_artifact

    out = prune(PruneConfig(model=str(tiny_llama_dir), method="sparsegpt", sparsity=0.5, calibration=CALIBRATION,
                            evaluation=None), tmp_path / "sgpt")
    weights = load_weights(out)
    name = next(iter(weights))
    weights[name] = weights[name][:, :-1].contiguous()  # one column short
    save_file(weights, out / WEIGHTS_FILE)
    manifest = Manifest.load(out, verify=False)
    manifest.save(out)  # re-hashed, so only the shape check can catch it
    with pytest.raises(ExciseError, match=f"tensor {name} has shape"):
        validate_artifact(out)
