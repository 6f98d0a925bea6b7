"""SAE files: save in SAELens v6 layout; load ours, SAELens, sparsify (EleutherAI) and OpenAI v5 SAEs.

Every format maps onto our `TopKSAE` (W_enc [d_in, n], b_enc [n], W_dec [n, d_in], b_dec [d_in];
encode = TopK-then-ReLU of (normalise(x) - b_dec) @ W_enc + b_enc), with encodings unchanged. One module
per format, each with `matches`, `load` and `content_files` (what `load` reads, for `sae_fingerprint`):

- `sae.formats.saelens`: ours / SAELens v6 (cfg.json + sae_weights.safetensors); also `save`.
- `sae.formats.sparsify`: sparsify folders (cfg.json + sae.safetensors).
- `sae.formats.openai`: OpenAI v5 `.pt` state dicts (TopK, with input layer norm).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from sae.formats import openai, saelens, sparsify
from sae.formats.common import CFG_FILENAME, SAEFormatError, read_cfg
from sae.hashing import hash_files
from sae.model import TopKSAE

__all__ = [
    "CFG_FILENAME",
    "SAELENS_LAYOUT_VERSION",
    "SAELENS_WEIGHTS",
    "SPARSIFY_WEIGHTS",
    "SAEFormatError",
    "detect_format",
    "load_sae",
    "load_sae_metadata",
    "sae_fingerprint",
    "save_sae",
]

logger = logging.getLogger(__name__)

SAELENS_WEIGHTS = saelens.WEIGHTS
SPARSIFY_WEIGHTS = sparsify.WEIGHTS
SAELENS_LAYOUT_VERSION = saelens.LAYOUT_VERSION
_FORMATS: dict[str, ModuleType] = {"saelens": saelens, "sparsify": sparsify, "openai_v5": openai}


def save_sae(
    sae: TopKSAE,
    directory: str | Path,
    metadata: Mapping[str, Any] | None = None,
    training_stats: Mapping[str, Any] | None = None,
) -> Path:
    """Save `sae` to `directory` in SAELens v6 layout; returns the folder.

    metadata (e.g. model_name, hook_name, layer, dataset) goes into cfg.json's "metadata";
    training_stats (fvu, l0, dead_fraction, tokens_seen, ...) and the full SAEConfig are extra
    top-level fields ("training_stats", "sae_config") that SAELens ignores.
    """
    return saelens.save(sae, Path(directory), metadata, training_stats)


def detect_format(path: str | Path) -> str:
    """"saelens" (ours too), "sparsify" or "openai_v5"; raises SAEFormatError for anything else."""
    path = Path(path)
    if not path.exists():
        raise SAEFormatError(f"SAE path not found: {path}")
    if path.is_file():
        if openai.matches(path):
            return "openai_v5"
        raise SAEFormatError(f"unknown SAE file {path}: expected a folder (SAELens/sparsify) or an OpenAI .pt")
    if saelens.matches(path):
        return "saelens"
    if sparsify.matches(path):
        return "sparsify"
    nested = sorted(p.name for p in path.iterdir() if (p / CFG_FILENAME).is_file())
    if nested:
        raise SAEFormatError(f"{path} holds several SAEs ({', '.join(nested[:5])}...); pass one of them")
    raise SAEFormatError(
        f"unknown SAE format in {path}: expected cfg.json with {SAELENS_WEIGHTS} (SAELens) "
        f"or {SPARSIFY_WEIGHTS} (sparsify)"
    )


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> TopKSAE:
    """Load a TopK SAE saved by us, SAELens (v6 or older topk), sparsify, or OpenAI (v5 .pt)."""
    fmt = detect_format(path)
    sae = _FORMATS[fmt].load(Path(path))
    logger.info("loaded %s SAE from %s: d_in %d, %d latents, k %d", fmt, path, sae.cfg.d_in,
                sae.cfg.n_latents, sae.cfg.k)
    return sae.to(device).eval()


def load_sae_metadata(path: str | Path) -> dict[str, Any]:
    """The cfg.json of a folder SAE (ours, SAELens, sparsify) as a dict; {} for OpenAI .pt files."""
    path = Path(path)
    return read_cfg(path) if detect_format(path) != "openai_v5" else {}


def sae_fingerprint(path: str | Path) -> str:
    """sha256 hex digest of the SAE's content: the format and the config/weight files it loads from.

    Only file contents and their roles enter the hash, never the path: the same files in two folders
    give the same fingerprint, one changed byte gives another. Files are streamed, not read whole.
    """
    fmt = detect_format(path)
    return hash_files(_FORMATS[fmt].content_files(Path(path)), kind=f"sae/{fmt}")
