"""Helpers shared by the SAE file formats: the error type, cfg.json / safetensors reading, and
turning a format's tensors into our `TopKSAE` with shape and finiteness checks."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import safe_open
from torch import Tensor

from sae.config import SAEConfig
from sae.model import TopKSAE

CFG_FILENAME = "cfg.json"


class SAEFormatError(ValueError):
    """An SAE file that we cannot read (unknown format, wrong shapes, unsupported options)."""


def read_cfg(folder: Path) -> dict[str, Any]:
    """The folder's cfg.json as a dict; SAEFormatError when it is not a JSON object."""
    try:
        cfg = json.loads((folder / CFG_FILENAME).read_text())
    except json.JSONDecodeError as e:
        raise SAEFormatError(f"{folder / CFG_FILENAME}: invalid JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise SAEFormatError(f"{folder / CFG_FILENAME}: expected a JSON object")
    return cfg


def read_safetensors(file: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, as float32 on CPU."""
    with safe_open(str(file), framework="pt", device="cpu") as f:
        return {key: f.get_tensor(key).to(torch.float32) for key in f.keys()}  # noqa: SIM118


def require(tensors: Mapping[str, Any], names: tuple[str, ...], where: Path) -> None:
    """Raise SAEFormatError naming the tensors of `names` that `tensors` lacks."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise SAEFormatError(f"{where}: missing tensors {missing} (has {sorted(tensors)[:8]})")


def sae_config(
    where: Path, d_in: int, n_latents: int, k: Any, normalize: str, saved: Mapping[str, Any] | None
) -> SAEConfig:
    """Our SAEConfig; the saved "sae_config" (ours) is kept when it agrees with the weights."""
    if k is None:
        raise SAEFormatError(f"{where}: no 'k' in the config")
    fields = {"d_in": d_in, "n_latents": n_latents, "k": int(k), "normalize_activations": normalize}
    if isinstance(saved, Mapping) and all(saved.get(f) == v for f, v in fields.items()):
        fields = {**saved, **fields}
    try:
        return SAEConfig(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        raise SAEFormatError(f"{where}: bad SAE config ({first['loc']}: {first['msg']})") from None


def build(cfg: SAEConfig, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, where: Path) -> TopKSAE:
    """A TopKSAE holding W_enc [d_in, n], b_enc [n], W_dec [n, d_in], b_dec [d_in] (checked)."""
    d, n = cfg.d_in, cfg.n_latents
    expected = {"W_enc": (d, n), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
    given = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    for name, shape in expected.items():
        if tuple(given[name].shape) != shape:
            raise SAEFormatError(f"{where}: {name} has shape {tuple(given[name].shape)}, expected {shape}")
    if not all(math.isfinite(float(t.abs().sum())) for t in given.values()):
        raise SAEFormatError(f"{where}: weights contain NaN or inf")
    sae = TopKSAE(cfg)
    with torch.no_grad():
        for name, tensor in given.items():
            getattr(sae, name).copy_(tensor.to(torch.float32))
    return sae
