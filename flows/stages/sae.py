"""The SAE stage: train a TopK SAE on the run's activations, or load a given one, and store it.

The SAE is saved beside its final directory and renamed into place, so a crash never leaves a
half-written SAE that a rerun would trust. Its id (flows/store/ids.py) names everything that shaped it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from flows.config import RunConfig
from flows.stages.data import DataRef, load_subject, read_contexts, resolve_device
from flows.store import Store
from flows.store.ids import model_name, sae_id

log = logging.getLogger(__name__)

INIT_SAMPLE_TOKENS = 16_384
"""Tokens whose geometric median initialises the SAE's b_dec."""


def run_sae_id(cfg: RunConfig, data: DataRef) -> str:
    """The id the run's SAE has (or will have) in the store."""
    fingerprint = ""
    if cfg.sae_path:
        from sae.formats import sae_fingerprint

        fingerprint = sae_fingerprint(cfg.sae_path)
    return sae_id(cfg, data.dataset_id, data.model_type, data.model_fingerprint, data.layer, fingerprint)


def train_or_load_sae(cfg: RunConfig, data: DataRef) -> str:
    """Train a TopK SAE on the cached activations (or load `--sae`) and store it; returns the sae_id."""
    from sae.formats import load_sae, save_sae

    store = Store(cfg.store)
    sid = run_sae_id(cfg, data)
    directory = store.sae_dir(sid)
    if (directory / "cfg.json").exists():
        log.info("SAE %s already in the store", sid)
        return sid
    meta = {"model": model_name(cfg), "model_fingerprint": data.model_fingerprint, "layer": data.layer,
            "dataset_id": data.dataset_id}
    if cfg.sae_path:
        sae, stats = load_sae(cfg.sae_path), None
        if sae.cfg.d_in != data.d_model:
            raise ValueError(f"--sae has d_in {sae.cfg.d_in} but {model_name(cfg)} has d_model {data.d_model}")
        meta["source"] = str(cfg.sae_path)
    else:
        sae, stats = _train(cfg, data)
        log.info("trained SAE %s: %s", sid, {k: round(v, 4) for k, v in stats.items() if isinstance(v, float)})
    staging = directory.with_name(f".{sid}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_sae(sae, staging, metadata=meta, training_stats=stats)
    staging.rename(directory)
    return sid


def _train(cfg: RunConfig, data: DataRef):
    from sae.config import SAEConfig
    from sae.train import train_sae

    sae_cfg = SAEConfig(d_in=data.d_model, **cfg.sae.model_dump())
    train_cfg = cfg.train.model_copy(update={"device": resolve_device(cfg.device)})
    batches, init_sample = _training_batches(cfg, data)
    result = train_sae(sae_cfg, train_cfg, batches, init_sample)
    return result.sae, dict(result.stats)


def _training_batches(cfg: RunConfig, data: DataRef):
    """(shuffled batches [batch, d] for train tokens, init sample [n, d]) from the file or the model."""
    tokens, batch_size = cfg.train.tokens, cfg.train.batch_size
    if data.activations_path:
        from sae.data.activation_files import open_activations, shuffled_batches

        acts = open_activations(data.activations_path)
        batches = shuffled_batches(acts, batch_size, tokens, seed=cfg.seed)
        return batches, sample_rows(acts, INIT_SAMPLE_TOKENS, seed=cfg.seed)
    from sae.data.subject import streaming_token_batches

    subject = load_subject(cfg)
    contexts = read_contexts(Store(cfg.store), data.dataset_id)["token_ids"].to_list()
    init = next(streaming_token_batches(subject, contexts, data.layer, INIT_SAMPLE_TOKENS,
                                        n_tokens=INIT_SAMPLE_TOKENS, seed=cfg.seed + 1))
    batches = streaming_token_batches(subject, contexts, data.layer, batch_size, n_tokens=tokens, seed=cfg.seed)
    return batches, init


def sample_rows(acts: np.ndarray, n: int, seed: int):
    """Up to `n` random rows of an activation matrix [tokens, d] as a tensor [n, d] (b_dec init)."""
    import torch

    rows = np.random.default_rng(seed).choice(len(acts), size=min(n, len(acts)), replace=False)
    return torch.from_numpy(np.asarray(acts[np.sort(rows)], dtype=np.float32))


def load_stored_sae(store: Store, sid: str, device: str = "cpu"):
    from sae.formats import load_sae

    return load_sae(Path(store.sae_dir(sid))).to(resolve_device(device)).eval()
