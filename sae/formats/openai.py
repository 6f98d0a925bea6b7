"""OpenAI v5 SAE checkpoints (openai/sparse_autoencoder).

A `.pt` state dict with `pre_bias` [d_in], `encoder.weight` [n, d_in], `latent_bias` [n], `decoder.weight`
[d_in, n], `activation` = "TopK" and `activation_state_dict` = {k, postact_fn}; a TopK checkpoint
normalises its input with LN(x) = (x - mean) / (std + 1e-5), which is our "layer_norm".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sae.formats.common import SAEFormatError, build, require, sae_config
from sae.model import TopKSAE

SUFFIXES = (".pt", ".pth")


def matches(file: Path) -> bool:
    """Whether `file` looks like an OpenAI checkpoint (a .pt / .pth file)."""
    return file.is_file() and file.suffix in SUFFIXES


def content_files(file: Path) -> list[tuple[str, Path]]:
    """(label, file) for everything `load` reads: the one state-dict file (labelled by role, not name)."""
    return [("state_dict", file)]


def load(file: Path) -> TopKSAE:
    """A TopKSAE (layer_norm input) from an OpenAI TopK state dict; ReLU SAEs are refused."""
    state = _read_state_dict(file)
    activation = state.get("activation", "ReLU")
    if activation != "TopK":
        raise SAEFormatError(f"{file}: OpenAI SAE activation {activation!r} is not TopK")
    act_state = state.get("activation_state_dict") or {}
    if act_state.get("postact_fn", "ReLU") != "ReLU":
        raise SAEFormatError(f"{file}: TopK postact_fn {act_state['postact_fn']!r} is not supported (ReLU)")
    require(state, ("pre_bias", "encoder.weight", "latent_bias"), file)
    encoder = state["encoder.weight"].float()  # [n, d_in]
    decoder = state.get("decoder.weight")  # [d_in, n]; a tied decoder reuses the encoder
    W_dec = encoder.clone() if decoder is None else decoder.float().t().contiguous()
    if "k" not in act_state:
        raise SAEFormatError(f"{file}: activation_state_dict has no 'k'")
    # OpenAI's from_state_dict turns input normalisation on exactly for TopK checkpoints.
    cfg = sae_config(file, encoder.shape[1], encoder.shape[0], int(act_state["k"]), "layer_norm", None)
    W_enc = encoder.t().contiguous()
    return build(cfg, W_enc, state["latent_bias"].float(), W_dec, state["pre_bias"].float(), file)


def _read_state_dict(file: Path) -> Mapping[str, Any]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a state dict we read"
        raise SAEFormatError(f"{file}: not a readable PyTorch state dict ({type(e).__name__})") from None
    if not isinstance(state, Mapping):
        raise SAEFormatError(f"{file}: expected an OpenAI sparse_autoencoder state dict, got {type(state).__name__}")
    return state
