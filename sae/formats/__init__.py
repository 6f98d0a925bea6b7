"""SAE files: save in SAELens v6 layout; load ours, SAELens, sparsify (EleutherAI) and OpenAI v5 SAEs.

Every format maps onto our `TopKSAE` (W_enc [d_in, n], b_enc [n], W_dec [n, d_in], b_dec [d_in];
encode = TopK-then-ReLU of (normalise(x) - b_dec) @ W_enc + b_enc), with encodings unchanged:

- ours / SAELens v6: a folder with `cfg.json` (architecture "topk", d_in, d_sae, k,
  normalize_activations, metadata, ...) and `sae_weights.safetensors` (W_enc, W_dec, b_enc, b_dec).
  SAELens options that change the maths are folded into the weights: `apply_b_dec_to_input = false`
  (b_enc += b_dec @ W_enc) and `rescale_acts_by_decoder_norm = true` (W_enc, b_enc scaled by the decoder
  row norms, W_dec rows divided by them).
- sparsify: a folder with `cfg.json` (k, num_latents, activation, transcode, skip_connection, ...) and
  `sae.safetensors` holding `encoder.weight` [n, d_in] (an nn.Linear), `encoder.bias` [n],
  `W_dec` [n, d_in], `b_dec` [d_in]; encode = top-k of ReLU(encoder(x - b_dec)); no input normalisation.
- OpenAI v5 (openai/sparse_autoencoder): a `.pt` state dict with `pre_bias` [d_in], `encoder.weight`
  [n, d_in], `latent_bias` [n], `decoder.weight` [d_in, n], `activation` = "TopK" and
  `activation_state_dict` = {k, postact_fn}; a TopK checkpoint normalises its input with
  LN(x) = (x - mean) / (std + 1e-5), which is our "layer_norm".
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from sae.config import SAEConfig
from sae.model import TopKSAE

logger = logging.getLogger(__name__)

CFG_FILENAME = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
# The SAELens release whose layout we write; SAELens reads configs older than 6.0 differently.
SAELENS_LAYOUT_VERSION = "6.0.0"


class SAEFormatError(ValueError):
    """An SAE file that we cannot read (unknown format, wrong shapes, unsupported options)."""


# --- save ------------------------------------------------------------------------------------------
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
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: getattr(sae, name).detach().to("cpu", torch.float32).contiguous()
               for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    save_file(weights, str(directory / SAELENS_WEIGHTS))
    cfg = _saelens_cfg(sae.cfg, metadata, training_stats)
    (directory / CFG_FILENAME).write_text(json.dumps(cfg, indent=2, default=_jsonable) + "\n")
    logger.info("saved SAE (d_in %d, %d latents, k %d) to %s", sae.cfg.d_in, sae.cfg.n_latents,
                sae.cfg.k, directory)
    return directory


def _saelens_cfg(
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
        "metadata": {"sae_lens_version": SAELENS_LAYOUT_VERSION, "sae_lens_training_version": None,
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
def detect_format(path: str | Path) -> str:
    """"saelens" (ours too), "sparsify" or "openai_v5"; raises SAEFormatError for anything else."""
    path = Path(path)
    if not path.exists():
        raise SAEFormatError(f"SAE path not found: {path}")
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return "openai_v5"
        raise SAEFormatError(f"unknown SAE file {path}: expected a folder (SAELens/sparsify) or an OpenAI .pt")
    if (path / CFG_FILENAME).is_file() and (path / SAELENS_WEIGHTS).is_file():
        return "saelens"
    if (path / CFG_FILENAME).is_file() and (path / SPARSIFY_WEIGHTS).is_file():
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
    loader = {"saelens": _load_saelens, "sparsify": _load_sparsify, "openai_v5": _load_openai_v5}[fmt]
    sae = loader(Path(path))
    logger.info("loaded %s SAE from %s: d_in %d, %d latents, k %d", fmt, path, sae.cfg.d_in,
                sae.cfg.n_latents, sae.cfg.k)
    return sae.to(device).eval()


def load_sae_metadata(path: str | Path) -> dict[str, Any]:
    """The cfg.json of a folder SAE (ours, SAELens, sparsify) as a dict; {} for OpenAI .pt files."""
    path = Path(path)
    return _read_cfg(path) if detect_format(path) != "openai_v5" else {}


def _read_cfg(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / CFG_FILENAME).read_text())
    except json.JSONDecodeError as e:
        raise SAEFormatError(f"{folder / CFG_FILENAME}: invalid JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise SAEFormatError(f"{folder / CFG_FILENAME}: expected a JSON object")
    return cfg


def _read_safetensors(file: Path) -> dict[str, Tensor]:
    with safe_open(str(file), framework="pt", device="cpu") as f:
        return {key: f.get_tensor(key).to(torch.float32) for key in f.keys()}  # noqa: SIM118


def _load_saelens(folder: Path) -> TopKSAE:
    cfg = _read_cfg(folder)
    architecture = cfg.get("architecture") or _pre_v6_architecture(cfg)
    if architecture != "topk":
        raise SAEFormatError(f"{folder}: SAELens architecture {architecture!r} is not a TopK SAE")
    normalize = cfg.get("normalize_activations", "none")
    if normalize not in ("none", "layer_norm"):
        raise SAEFormatError(f"{folder}: normalize_activations {normalize!r} is not supported "
                             "(only 'none' and 'layer_norm')")
    if cfg.get("reshape_activations", "none") != "none":
        raise SAEFormatError(f"{folder}: reshape_activations {cfg['reshape_activations']!r} is not supported")
    weights = _read_safetensors(folder / SAELENS_WEIGHTS)
    _require(weights, ("W_enc", "W_dec", "b_enc", "b_dec"), folder / SAELENS_WEIGHTS)
    W_enc, W_dec, b_enc, b_dec = (weights[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    if not cfg.get("apply_b_dec_to_input", True):
        # SAELens then encodes x @ W_enc + b_enc; ours subtracts b_dec first, so add it back in b_enc.
        b_enc = b_enc + b_dec @ W_enc
    if cfg.get("rescale_acts_by_decoder_norm", False):
        norms = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    sae_cfg = _sae_config(folder, W_enc.shape[0], W_enc.shape[1], k, normalize, cfg.get("sae_config"))
    return _build(sae_cfg, W_enc, b_enc, W_dec, b_dec, folder)


def _pre_v6_architecture(cfg: Mapping[str, Any]) -> str:
    # SAELens < 6 wrote activation_fn "topk" (with activation_fn_kwargs.k) instead of an architecture.
    return "topk" if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk" else "standard"


def _load_sparsify(folder: Path) -> TopKSAE:
    cfg = _read_cfg(folder)
    if cfg.get("transcode"):
        raise SAEFormatError(f"{folder}: a sparsify transcoder is not an autoencoder; not supported")
    if cfg.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{folder}: sparsify activation {cfg['activation']!r} is not supported (topk)")
    weights = _read_safetensors(folder / SPARSIFY_WEIGHTS)
    if "W_skip" in weights or cfg.get("skip_connection"):
        raise SAEFormatError(f"{folder}: sparsify skip connections (W_skip) are not supported")
    _require(weights, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), folder / SPARSIFY_WEIGHTS)
    W_enc = weights["encoder.weight"].t().contiguous()  # nn.Linear stores [n, d_in]
    if "k" not in cfg:
        raise SAEFormatError(f"{folder / CFG_FILENAME}: no 'k'")
    sae_cfg = _sae_config(folder, W_enc.shape[0], W_enc.shape[1], cfg["k"], "none", None)
    return _build(sae_cfg, W_enc, weights["encoder.bias"], weights["W_dec"], weights["b_dec"], folder)


def _load_openai_v5(file: Path) -> TopKSAE:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a state dict we read"
        raise SAEFormatError(f"{file}: not a readable PyTorch state dict ({type(e).__name__})") from None
    if not isinstance(state, Mapping):
        raise SAEFormatError(f"{file}: expected an OpenAI sparse_autoencoder state dict, got {type(state).__name__}")
    activation = state.get("activation", "ReLU")
    if activation != "TopK":
        raise SAEFormatError(f"{file}: OpenAI SAE activation {activation!r} is not TopK")
    act_state = state.get("activation_state_dict") or {}
    if act_state.get("postact_fn", "ReLU") != "ReLU":
        raise SAEFormatError(f"{file}: TopK postact_fn {act_state['postact_fn']!r} is not supported (ReLU)")
    _require(state, ("pre_bias", "encoder.weight", "latent_bias"), file)
    encoder = state["encoder.weight"].float()  # [n, d_in]
    decoder = state.get("decoder.weight")  # [d_in, n]; a tied decoder reuses the encoder
    W_dec = encoder.clone() if decoder is None else decoder.float().t().contiguous()
    if "k" not in act_state:
        raise SAEFormatError(f"{file}: activation_state_dict has no 'k'")
    # OpenAI's from_state_dict turns input normalisation on exactly for TopK checkpoints.
    sae_cfg = _sae_config(file, encoder.shape[1], encoder.shape[0], int(act_state["k"]), "layer_norm", None)
    W_enc = encoder.t().contiguous()
    return _build(sae_cfg, W_enc, state["latent_bias"].float(), W_dec, state["pre_bias"].float(), file)


def _require(tensors: Mapping[str, Any], names: tuple[str, ...], where: Path) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise SAEFormatError(f"{where}: missing tensors {missing} (has {sorted(tensors)[:8]})")


def _sae_config(
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


def _build(cfg: SAEConfig, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, where: Path) -> TopKSAE:
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
