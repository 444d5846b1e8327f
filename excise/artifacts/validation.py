"""Validation of anything excise or its server loads: artifacts, exported folders, adapters.

`validate_artifact` is the one entry point, for the CLI, the export pipeline and
the server's loading of weights and corrections. Every check runs before a weight
is loaded: safetensors only (never pickle), no remote code, a manifest whose
listed files are plain names inside the folder and match their hashes
(`Manifest.load(verify=True)`), no file the manifest does not list, the base
model's weights (hashed from its files) matching the hash the artifact was made
for, and the contents of its kind checked against the base model from the
safetensors headers: masks and updated weights here, the `sparse` encoding in
`excise.artifacts.sparse`, the LoRA adapter in `excise.artifacts.lora`, dense
(`hf`) and shrunk folders by `check_dense_against_base`. A new kind adds its
check to `FORMAT_CHECKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from excise.artifacts.families import family_of
from excise.artifacts.headers import check_tensor, read_json, tensor_specs
from excise.artifacts.lora import check_lora
from excise.artifacts.manifest import MANIFEST_NAME, BaseModelRef, Manifest
from excise.artifacts.masks import MaskSet
from excise.artifacts.model_folder import PICKLE_SUFFIXES, locate_model, read_config, validate_model_folder, weights_sha256
from excise.artifacts.sparse import check_sparse
from excise.artifacts.updates import WEIGHTS_FILE
from excise.errors import ExciseError

MASK_KINDS = frozenset({"mask", "reconstruction", "circuit", "correction"})
#: mask kinds that also carry updated weights (`excise.artifacts.updates`)
UPDATED_KINDS = frozenset({"reconstruction"})
#: files whose `auto_map` would make transformers or vLLM import code shipped with the folder
_CODE_CARRIERS = ("config.json", "tokenizer_config.json", "adapter_config.json")


@dataclass(frozen=True)
class ValidatedArtifact:
    folder: Path
    manifest: Manifest
    base_path: Path  # the dense base model folder, its weights hash verified
    masks: MaskSet | None = None  # a mask kind's masks, as checked (so no caller reads them again)


def validate_artifact(
    folder: Path, *, kinds: frozenset[str] | None = None, base: Path | None = None
) -> ValidatedArtifact:
    """Check an artifact folder completely (see the module doc) and return its manifest and base.

    `base` is the model folder the artifact will be applied to (a server's engine weights); its
    weights must be the ones the artifact was made for. Without it, the base the manifest names.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder, kinds)
    base_path = verify_base_model(manifest.base_model, base)
    return ValidatedArtifact(folder, manifest, base_path, check_contents(folder, manifest.kind, base_path))


def validate_derived(folder: Path, parent: ValidatedArtifact) -> ValidatedArtifact:
    """`validate_artifact` for an artifact just made from `parent`: the same checks, except that the
    base model, pinned by the same reference, is the one `parent`'s validation already hashed."""
    folder = Path(folder)
    manifest = _read_manifest(folder, None)
    if manifest.base_model != parent.manifest.base_model:
        raise ExciseError(f"{folder} names another base model than {parent.folder}, which it was made from")
    return ValidatedArtifact(folder, manifest, parent.base_path, check_contents(folder, manifest.kind, parent.base_path))


def _read_manifest(folder: Path, kinds: frozenset[str] | None) -> Manifest:
    """The folder's verified manifest, once nothing unsafe or unlisted lies beside it."""
    if not folder.is_dir():
        raise ExciseError(f"{folder} is not a folder; pass an artifact folder written by excise")
    refuse_pickle(folder)
    manifest = Manifest.load(folder, verify=True)
    if kinds is not None and manifest.kind not in kinds:
        raise ExciseError(f"{folder} is a {manifest.kind} artifact; expected one of: {', '.join(sorted(kinds))}")
    unlisted = sorted(p.name for p in folder.iterdir() if p.name not in manifest.files and p.name != MANIFEST_NAME)
    if unlisted:
        raise ExciseError(f"{folder} holds files its manifest does not list ({', '.join(unlisted)}); remove them or re-export")
    refuse_remote_code(folder)
    return manifest


def check_contents(folder: Path, kind: str, base_path: Path) -> MaskSet | None:
    """The files of a `kind` artifact fit the verified base model; a mask kind's masks are returned."""
    if kind in MASK_KINDS:
        masks = check_masks(folder, base_path)
        if kind in UPDATED_KINDS:
            check_updated_weights(folder, base_path, masks)
        return masks
    FORMAT_CHECKS[kind](folder, base_path)
    return None


def refuse_pickle(folder: Path) -> None:
    pickled = sorted(p.name for p in Path(folder).rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ExciseError(f"{folder} contains pickle files ({', '.join(pickled)}); excise loads safetensors only")


def refuse_remote_code(folder: Path) -> None:
    for name in _CODE_CARRIERS:
        path = Path(folder) / name
        if path.is_file() and "auto_map" in read_json(path):
            raise ExciseError(f"{path} asks for custom code (auto_map); excise never runs remote code")


def verify_base_model(ref: BaseModelRef, folder: Path | None = None) -> Path:
    """`folder` (default: the one `ref` names, its spec, else its recorded path), whose weights are
    the ones `ref` pins."""
    if folder is not None:
        folder = validate_model_folder(folder)
    else:
        try:
            folder = locate_model(ref.spec)
        except ExciseError:
            folder = locate_model(ref.path)
    actual = weights_sha256(folder)
    if actual != ref.weights_sha256:
        raise ExciseError(
            f"the artifact was made for a base model with weights sha256 {ref.weights_sha256[:12]}…, but {folder} "
            f"has {actual[:12]}…; use the artifact made for this model, or the model it was made for"
        )
    return folder


def check_dense_against_base(folder: Path, base_path: Path, *, may_shrink: bool = False) -> None:
    """A loadable dense folder whose tensors are the base's: same names and dtypes kinds, same shapes
    (with `may_shrink`, each dimension at most the base's, as after structured removal)."""
    validate_model_folder(folder)
    base, ours = tensor_specs(base_path), tensor_specs(folder)
    if set(ours) != set(base):
        extra, missing = sorted(set(ours) - set(base)), sorted(set(base) - set(ours))
        raise ExciseError(f"{folder} does not hold the base model's tensors (extra {extra[:3]}, missing {missing[:3]})")
    for name, (shape, dtype) in ours.items():
        check_tensor(folder, name, shape, dtype, base[name], may_shrink=may_shrink)


def check_masks(folder: Path, base_path: Path) -> MaskSet:
    """The folder's masks, each naming a tensor, layer, neuron count or head count the base model has."""
    masks = MaskSet.load(folder)
    base = tensor_specs(base_path)
    config = read_config(base_path)
    width = config[family_of(config["model_type"]).mlp_width_key]
    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    for name, mask in masks.weights.items():
        if name not in base or tuple(mask.shape) != base[name][0]:
            expected = list(base[name][0]) if name in base else "no such tensor"
            raise ExciseError(f"{folder}: mask {name} {list(mask.shape)} does not fit the base model ({expected})")
    for kind, per_layer, size in (("neuron", masks.neurons, width), ("head", masks.heads, heads)):
        for layer, mask in per_layer.items():
            if not 0 <= layer < layers or tuple(mask.shape) != (size,):
                raise ExciseError(
                    f"{folder}: {kind} mask of layer {layer} has shape {list(mask.shape)}; "
                    f"the base model has {layers} layers of {size} {kind}s"
                )
    return masks


def check_updated_weights(folder: Path, base_path: Path, masks: MaskSet) -> None:
    """The updated weights name tensors the base model has, in its shapes, each one also masked."""
    base = tensor_specs(base_path)
    updated = tensor_specs(folder, WEIGHTS_FILE)
    if not updated:
        raise ExciseError(f"{folder} is a reconstruction artifact without updated weights ({WEIGHTS_FILE})")
    for name, (shape, dtype) in updated.items():
        if name not in base:
            raise ExciseError(f"{folder}: updated weight {name} is not a tensor of the base model")
        check_tensor(folder, name, shape, dtype, base[name])
        if name not in masks.weights:
            raise ExciseError(f"{folder}: updated weight {name} has no mask; the artifact is inconsistent")


#: the check of each kind that is not a mask kind
FORMAT_CHECKS: dict[str, Callable[[Path, Path], object]] = {
    "scores": lambda folder, base_path: None,  # scores carry no tensor of the base model's shape to check
    "hf": check_dense_against_base,
    "shrunk": partial(check_dense_against_base, may_shrink=True),
    "sparse": check_sparse,
    "lora": partial(check_lora, excise_made=True),
}
