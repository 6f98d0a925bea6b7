"""The SAE stage: train a TopK SAE on the run's activations, or load a given one, and store it.

The SAE is saved beside its final directory and renamed into place, so a crash never leaves a
half-written SAE that a rerun would trust. Its id (flows/store/ids.py) names everything that shaped it.
Training checkpoints to `<store>/checkpoints/<sae_id>.pt` every `train.checkpoint_every` steps; a rerun
after a crash resumes from there (sae/checkpoint.py) and the checkpoint is removed once the SAE is saved.
The last `train.heldout_frac` of the contexts are held out of training: sae_metrics evaluates on them
(flows/stages/sae_metrics.py).
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
    return sae_id(cfg, data.dataset_id, data.model_type, data.model_fingerprint, data.layer, data.d_model,
                  fingerprint)


def heldout_contexts(cfg: RunConfig, n_contexts: int) -> int:
    """How many of the dataset's last contexts are held out of training (at least 1 when any are asked)."""
    if cfg.train.heldout_frac == 0 or n_contexts < 2:
        return 0
    return min(max(1, round(n_contexts * cfg.train.heldout_frac)), n_contexts - 1)


def training_rows(cfg: RunConfig, data: DataRef, n_rows: int) -> int:
    """Rows [0, cut) of the activation file train the SAE; [cut, n_rows) are held out (whole contexts)."""
    n_ctx = data.n_contexts or n_rows // max(data.ctx_len, 1)
    return min(n_rows, (n_ctx - heldout_contexts(cfg, n_ctx)) * data.ctx_len)


def checkpoint_path(store: Store, sid: str) -> Path:
    return store.root / "checkpoints" / f"{sid}.pt"


def train_or_load_sae(cfg: RunConfig, data: DataRef) -> str:
    """Train a TopK SAE on the cached activations (or load `--sae`) and store it; returns the sae_id."""
    from sae.checkpoint import remove_checkpoint
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
        sae, stats = _train(cfg, data, checkpoint_path(store, sid))
        log.info("trained SAE %s: %s", sid, {k: round(v, 4) for k, v in stats.items() if isinstance(v, float)})
    staging = directory.with_name(f".{sid}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_sae(sae, staging, metadata=meta, training_stats=stats)
    staging.rename(directory)
    remove_checkpoint(checkpoint_path(store, sid))
    return sid


def _train(cfg: RunConfig, data: DataRef, checkpoint: Path):
    from sae.config import SAEConfig
    from sae.train import train_sae

    sae_cfg = SAEConfig(d_in=data.d_model, **cfg.sae.model_dump())
    train_cfg = cfg.train.model_copy(update={"device": resolve_device(cfg.device)})
    batches, init_sample = _training_batches(cfg, data)
    result = train_sae(sae_cfg, train_cfg, batches, init_sample, checkpoint=checkpoint)
    return result.sae, dict(result.stats)


def _training_batches(cfg: RunConfig, data: DataRef):
    """(batches: tokens done -> shuffled batches [batch, d] of the rest, init sample [n, d]), from the
    file's training rows or streamed from the model."""
    tokens, batch_size = cfg.train.tokens, cfg.train.batch_size
    if data.activations_path:
        from sae.data.activation_files import check_finite, open_activations, shuffled_batches

        acts = open_activations(data.activations_path)
        check_finite(acts, data.activations_path)
        train = acts[: training_rows(cfg, data, len(acts))]
        log.info("training on rows 0-%d of %s (%d held out)", len(train), data.activations_path,
                 len(acts) - len(train))

        def batches(done: int):
            return shuffled_batches(train, batch_size, tokens, seed=cfg.seed, start=done)

        return batches, sample_rows(train, INIT_SAMPLE_TOKENS, seed=cfg.seed)
    from sae.data.subject import streaming_token_batches

    subject = load_subject(cfg)
    contexts = read_contexts(Store(cfg.store), data.dataset_id)["token_ids"].to_list()
    contexts = contexts[: len(contexts) - heldout_contexts(cfg, len(contexts))]
    init = next(streaming_token_batches(subject, contexts, data.layer, INIT_SAMPLE_TOKENS,
                                        n_tokens=INIT_SAMPLE_TOKENS, seed=cfg.seed + 1))

    def streamed(done: int):
        # a stream cannot be fast-forwarded: a resumed run draws a fresh, differently seeded stream
        return streaming_token_batches(subject, contexts, data.layer, batch_size, n_tokens=tokens - done,
                                       seed=cfg.seed + done)

    return streamed, init


def sample_rows(acts: np.ndarray, n: int, seed: int):
    """Up to `n` random rows of an activation matrix [tokens, d] as a tensor [n, d] (b_dec init)."""
    import torch

    rows = np.random.default_rng(seed).choice(len(acts), size=min(n, len(acts)), replace=False)
    return torch.from_numpy(np.asarray(acts[np.sort(rows)], dtype=np.float32))


def load_stored_sae(store: Store, sid: str, device: str = "cpu"):
    from sae.formats import load_sae

    return load_sae(Path(store.sae_dir(sid))).to(resolve_device(device)).eval()
