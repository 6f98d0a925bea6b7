"""Our SAELens-v6 layout (save and load) and SAELens's own TopK folders (v6, and older topk configs).

A folder with `cfg.json` (architecture "topk", d_in, d_sae, k, normalize_activations, metadata, ...)
and `sae_weights.safetensors` (W_enc [d_in, n], W_dec [n, d_in], b_enc [n], b_dec [d_in]). SAELens
options that change the maths are folded into the weights: `apply_b_dec_to_input = false`
(b_enc += b_dec @ W_enc) and `rescale_acts_by_decoder_norm = true` (W_enc, b_enc scaled by the decoder
row norms, W_dec rows divided by them).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sae.config import SAEConfig
from sae.formats.common import CFG_FILENAME, SAEFormatError, build, read_cfg, read_safetensors, require, sae_config
from sae.model import TopKSAE

logger = logging.getLogger(__name__)

WEIGHTS = "sae_weights.safetensors"
# The SAELens release whose layout we write; SAELens reads configs older than 6.0 differently.
LAYOUT_VERSION = "6.0.0"
TENSOR_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec")


def matches(folder: Path) -> bool:
    """Whether `folder` is laid out as a SAELens SAE (cfg.json + sae_weights.safetensors)."""
    return (folder / CFG_FILENAME).is_file() and (folder / WEIGHTS).is_file()


def content_files(folder: Path) -> list[tuple[str, Path]]:
    """(label, file) for everything `load` reads: the config and the weights."""
    return [(CFG_FILENAME, folder / CFG_FILENAME), (WEIGHTS, folder / WEIGHTS)]


# --- save ------------------------------------------------------------------------------------------
def save(
    sae: TopKSAE,
    directory: Path,
    metadata: Mapping[str, Any] | None,
    training_stats: Mapping[str, Any] | None,
) -> Path:
    """Write `sae` to `directory` (created if needed) as cfg.json + sae_weights.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: getattr(sae, name).detach().to("cpu", torch.float32).contiguous() for name in TENSOR_NAMES}
    save_file(weights, str(directory / WEIGHTS))
    cfg = _cfg(sae.cfg, metadata, training_stats)
    (directory / CFG_FILENAME).write_text(json.dumps(cfg, indent=2, default=_jsonable) + "\n")
    # safetensors writes through a private temporary file (0600) renamed into place: give the weights the
    # mode cfg.json got from the user's umask, so a store shared by a group stays readable
    os.chmod(directory / WEIGHTS, (directory / CFG_FILENAME).stat().st_mode & 0o777)
    logger.info("saved SAE (d_in %d, %d latents, k %d) to %s", sae.cfg.d_in, sae.cfg.n_latents,
                sae.cfg.k, directory)
    return directory


def _cfg(
    cfg: SAEConfig, metadata: Mapping[str, Any] | None, training_stats: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "architecture": "topk",
        "d_in": cfg.d_in,
        "d_sae": cfg.n_latents,
        "k": cfg.k,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": {"sae_lens_version": LAYOUT_VERSION, "sae_lens_training_version": None,
                     **dict(metadata or {})},
        "sae_config": cfg.model_dump(),
        "training_stats": dict(training_stats or {}),
    }


def _jsonable(value: Any) -> Any:
    """json.dumps fallback for tensors / numpy scalars in metadata and stats."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in cfg.json")


# --- load ------------------------------------------------------------------------------------------
def load(folder: Path) -> TopKSAE:
    """A TopKSAE from a SAELens (or our) folder, with SAELens's encoding options folded in."""
    cfg = read_cfg(folder)
    normalize = _check_supported(folder, cfg)
    weights = read_safetensors(folder / WEIGHTS)
    require(weights, TENSOR_NAMES, folder / WEIGHTS)
    W_enc, W_dec, b_enc, b_dec = (weights[n] for n in TENSOR_NAMES)
    if not cfg.get("apply_b_dec_to_input", True):
        # SAELens then encodes x @ W_enc + b_enc; ours subtracts b_dec first, so add it back in b_enc.
        b_enc = b_enc + b_dec @ W_enc
    if cfg.get("rescale_acts_by_decoder_norm", False):
        norms = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    sae_cfg = sae_config(folder, W_enc.shape[0], W_enc.shape[1], k, normalize, cfg.get("sae_config"))
    return build(sae_cfg, W_enc, b_enc, W_dec, b_dec, folder)


def _check_supported(folder: Path, cfg: Mapping[str, Any]) -> str:
    """Reject non-TopK and reshaping SAEs; returns the (supported) normalize_activations."""
    architecture = cfg.get("architecture") or _pre_v6_architecture(cfg)
    if architecture != "topk":
        raise SAEFormatError(f"{folder}: SAELens architecture {architecture!r} is not a TopK SAE")
    normalize = cfg.get("normalize_activations", "none")
    if normalize not in ("none", "layer_norm"):
        raise SAEFormatError(f"{folder}: normalize_activations {normalize!r} is not supported "
                             "(only 'none' and 'layer_norm')")
    if cfg.get("reshape_activations", "none") != "none":
        raise SAEFormatError(f"{folder}: reshape_activations {cfg['reshape_activations']!r} is not supported")
    return normalize


def _pre_v6_architecture(cfg: Mapping[str, Any]) -> str:
    # SAELens < 6 wrote activation_fn "topk" (with activation_fn_kwargs.k) instead of an architecture.
    return "topk" if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk" else "standard"
