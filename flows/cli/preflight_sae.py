"""Preflight of `--sae`: the file is a readable SAE whose width matches the subject model and whose saved
layer and model are the ones requested (unless `--force`), read from cfg.json and the safetensors header
only (a few kB, never the weights)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)$")
_SPARSIFY_LAYER = re.compile(r"layers?\.(\d+)$")
WEIGHT_FILES = {"saelens": ("sae_weights.safetensors", "W_enc", 0),
                "sparsify": ("sae.safetensors", "encoder.weight", 1)}
"""Per folder format: the weights file, the encoder tensor and which of its dims is d_in."""


def check_sae(sae_path: str, d_model: int | None, layer: int | None, model: str, force: bool) -> None:
    """Raise a one-line ValueError / FileNotFoundError for an SAE that cannot be used as requested.

    d_model: the subject model's width (None: unknown, not checked); layer: the block that will be read;
    model: the subject model's name; force: accept a saved layer/model that differs (never a width).
    """
    from sae.formats import SAEFormatError, detect_format, load_sae_metadata

    path = Path(sae_path)
    if not path.exists():
        raise FileNotFoundError(f"--sae {sae_path}: no such file or directory")
    try:
        fmt = detect_format(path)
        cfg = load_sae_metadata(path)
    except SAEFormatError as exc:
        raise ValueError(f"--sae {sae_path}: {exc}") from None
    if fmt not in WEIGHT_FILES:
        return  # an OpenAI .pt: no header to read cheaply; checked when it loads
    name, tensor, dim = WEIGHT_FILES[fmt]
    shape = _tensor_shape(sae_path, path / name, tensor)
    if d_model is not None and len(shape) == 2 and shape[dim] != d_model:
        raise ValueError(f"--sae {sae_path}: its d_in is {shape[dim]} but {model} has width {d_model}; "
                         f"use an SAE trained on this model")
    if force:
        return
    saved_layer, saved_model = saved_site(cfg, path)
    if layer is not None and saved_layer is not None and saved_layer != layer:
        raise ValueError(f"--sae {sae_path}: it was trained on layer {saved_layer}, not --layer {layer}; pass "
                         f"--layer {saved_layer} (or --force to use it anyway)")
    if saved_model is not None and _model_key(saved_model) != _model_key(model):
        raise ValueError(f"--sae {sae_path}: it was trained on model {saved_model}, not {model}; pass "
                         f"--model {saved_model} (or --force to use it anyway)")


def _tensor_shape(sae_path: str, file: Path, tensor: str) -> list[int]:
    """The shape of `tensor` from the safetensors header; a corrupt or truncated file is a ValueError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as f:  # parses and bounds-checks the header only
            if tensor not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                return []  # the format check on load names the missing tensors
            return list(f.get_slice(tensor).get_shape())
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"--sae {sae_path}: {file.name} is corrupt or truncated ({exc}); re-download or "
                         f"re-save the SAE") from None


def saved_site(cfg: dict[str, Any], path: Path) -> tuple[int | None, str | None]:
    """(layer, model) an SAE's config says it was trained on; None where it does not say.

    Ours: metadata.layer / metadata.model. SAELens: hook_name `blocks.N.hook_resid_post` is our layer N
    (`hook_resid_pre` of block N is the output of block N-1) and model_name. sparsify: a `layers.N` folder.
    """
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    layer = meta.get("layer")
    hook = meta.get("hook_name") or cfg.get("hook_name")
    if not isinstance(layer, int) and isinstance(hook, str) and (match := _HOOK.search(hook)):
        layer = int(match.group(1)) - (match.group(2) == "pre")
    if not isinstance(layer, int) and (match := _SPARSIFY_LAYER.search(path.name)):
        layer = int(match.group(1))
    model = meta.get("model") or meta.get("model_name") or cfg.get("model_name")
    return (layer if isinstance(layer, int) else None), (model if isinstance(model, str) else None)


def _model_key(name: str) -> str:
    """A model named by hub id or by a local folder is the same when the last part of the name is."""
    return Path(name.rstrip("/")).name.lower()
