"""sparsify (EleutherAI) SAE folders.

A folder with `cfg.json` (k, num_latents, activation, transcode, skip_connection, ...) and
`sae.safetensors` holding `encoder.weight` [n, d_in] (an nn.Linear), `encoder.bias` [n], `W_dec` [n, d_in],
`b_dec` [d_in]; encode = top-k of ReLU(encoder(x - b_dec)); no input normalisation.
"""

from __future__ import annotations

from pathlib import Path

from sae.formats.common import CFG_FILENAME, SAEFormatError, build, read_cfg, read_safetensors, require, sae_config
from sae.model import TopKSAE

WEIGHTS = "sae.safetensors"


def matches(folder: Path) -> bool:
    """Whether `folder` is laid out as a sparsify SAE (cfg.json + sae.safetensors)."""
    return (folder / CFG_FILENAME).is_file() and (folder / WEIGHTS).is_file()


def content_files(folder: Path) -> list[tuple[str, Path]]:
    """(label, file) for everything `load` reads: the config and the weights."""
    return [(CFG_FILENAME, folder / CFG_FILENAME), (WEIGHTS, folder / WEIGHTS)]


def load(folder: Path) -> TopKSAE:
    """A TopKSAE from a sparsify folder; transcoders, skip connections and non-TopK activations are refused."""
    cfg = read_cfg(folder)
    if cfg.get("transcode"):
        raise SAEFormatError(f"{folder}: a sparsify transcoder is not an autoencoder; not supported")
    if cfg.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{folder}: sparsify activation {cfg['activation']!r} is not supported (topk)")
    weights = read_safetensors(folder / WEIGHTS)
    if "W_skip" in weights or cfg.get("skip_connection"):
        raise SAEFormatError(f"{folder}: sparsify skip connections (W_skip) are not supported")
    require(weights, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), folder / WEIGHTS)
    W_enc = weights["encoder.weight"].t().contiguous()  # nn.Linear stores [n, d_in]
    if "k" not in cfg:
        raise SAEFormatError(f"{folder / CFG_FILENAME}: no 'k'")
    sae_cfg = sae_config(folder, W_enc.shape[0], W_enc.shape[1], cfg["k"], "none", None)
    return build(sae_cfg, W_enc, weights["encoder.bias"], weights["W_dec"], weights["b_dec"], folder)
