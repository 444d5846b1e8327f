"""Validation of anything excise or its server loads: artifacts, exported folders, adapters.

`validate_artifact` is the one entry point, for the CLI and every load path of
the server. Every check runs before a weight is loaded: safetensors only (never
pickle), no remote code, a manifest whose listed files are plain names inside
the folder and match their hashes (`Manifest.load(verify=True)`), no file the
manifest does not list, the base model's weights (hashed from its files) matching
the hash the artifact was made for, and tensor names, shapes and dtypes read from
the safetensors headers checked against the base model. Format-specific checks
(sparse encoding, LoRA adapter config, shrunk widths) belong to the exporter of
that format (`excise.export`), which this module calls by kind; a new kind
adds its exporter (or a branch in `_check_kind`), nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from excise.errors import ExciseError
from excise.artifacts.manifest import MANIFEST_NAME, BaseModelRef, Manifest
from excise.artifacts.families import family_of
from excise.artifacts.model_folder import PICKLE_SUFFIXES, locate_model, read_config, validate_model_folder, weights_sha256

MASK_KINDS = frozenset({"mask", "reconstruction", "circuit", "correction"})
#: mask kinds that also carry updated weights (`excise.artifacts.updates`)
UPDATED_KINDS = frozenset({"reconstruction"})
FLOAT_DTYPES = frozenset({"F32", "BF16", "F16"})
#: files whose `auto_map` would make transformers or vLLM import code shipped with the folder
_CODE_CARRIERS = ("config.json", "tokenizer_config.json", "adapter_config.json")

TensorSpecs = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, safetensors dtype)


@dataclass(frozen=True)
class ValidatedArtifact:
    folder: Path
    manifest: Manifest
    base_path: Path  # the dense base model folder, its weights hash verified


def validate_artifact(
    folder: Path, *, kinds: frozenset[str] | None = None, base: Path | None = None
) -> ValidatedArtifact:
    """Check an artifact folder completely (see the module doc) and return its manifest and base.

    `base` is the model folder the artifact will be applied to (a server's engine weights); its
    weights must be the ones the artifact was made for. Without it, the base the manifest names.
    """
    folder = Path(folder)
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
    base_path = verify_base_model(manifest.base_model, base)
    _check_kind(folder, manifest.kind, base_path)
    return ValidatedArtifact(folder=folder, manifest=manifest, base_path=base_path)


def _check_kind(folder: Path, kind: str, base_path: Path) -> None:
    if kind in MASK_KINDS:
        check_masks(folder, base_path)
        if kind in UPDATED_KINDS:
            check_updated_weights(folder, base_path)
    elif kind != "scores":
        from excise.export import get_exporter  # the export formats import this module

        get_exporter(kind).validate(folder, base_path)


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


def tensor_specs(folder: Path, pattern: str = "*.safetensors") -> TensorSpecs:
    """Names, shapes and dtypes of every tensor in the folder's safetensors files, from their headers."""
    specs: TensorSpecs = {}
    for path in sorted(Path(folder).glob(pattern)):
        try:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    piece = handle.get_slice(name)
                    specs[name] = (tuple(piece.get_shape()), piece.get_dtype())
        except (SafetensorError, OSError) as error:
            raise ExciseError(f"{path} is not a readable safetensors file ({error})") from error
    return specs


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


def check_tensor(
    folder: Path, name: str, shape: tuple[int, ...], dtype: str, base: tuple[tuple[int, ...], str], *, may_shrink: bool = False
) -> None:
    base_shape, base_dtype = base
    same_kind = dtype in FLOAT_DTYPES if base_dtype in FLOAT_DTYPES else dtype == base_dtype
    if not same_kind:
        raise ExciseError(f"{folder}: tensor {name} has dtype {dtype}, incompatible with the base model's {base_dtype}")
    fits = len(shape) == len(base_shape) and all(
        (0 < ours <= theirs) if may_shrink else ours == theirs for ours, theirs in zip(shape, base_shape, strict=True)
    )
    if not fits:
        raise ExciseError(f"{folder}: tensor {name} has shape {list(shape)} but the base model's is {list(base_shape)}")


def check_masks(folder: Path, base_path: Path) -> None:
    """Every mask names a tensor, layer, neuron count or head count the base model has."""
    from excise.artifacts.masks import MaskSet  # torch: only for the mask kinds, which a server never loads

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


def check_updated_weights(folder: Path, base_path: Path) -> None:
    """The updated weights name tensors the base model has, in its shapes, each one also masked."""
    from excise.artifacts.masks import MaskSet
    from excise.artifacts.updates import WEIGHTS_FILE

    base = tensor_specs(base_path)
    masked = set(MaskSet.load(folder).weights)
    updated = tensor_specs(folder, WEIGHTS_FILE)
    if not updated:
        raise ExciseError(f"{folder} is a reconstruction artifact without updated weights ({WEIGHTS_FILE})")
    for name, (shape, dtype) in updated.items():
        if name not in base:
            raise ExciseError(f"{folder}: updated weight {name} is not a tensor of the base model")
        check_tensor(folder, name, shape, dtype, base[name])
        if name not in masked:
            raise ExciseError(f"{folder}: updated weight {name} has no mask; the artifact is inconsistent")


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a one-line error naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExciseError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ExciseError(f"{path} is not a JSON object")
    return data
