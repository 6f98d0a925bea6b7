"""Stages up to a trained SAE: contexts, cached activations, SAE (trained or loaded).

Each stage checks the store first and returns what is already there, so a rerun or a resume after a
crash skips finished work. These are plain functions; flows/pipeline.py wraps them in Prefect flows
that pass ids and paths between stages, never tensors (PREFECT_NOTES.md).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from flows.config import RunConfig
from flows.store import Store
from flows.store.ids import activations_id, dataset_id, model_name, sae_id

log = logging.getLogger(__name__)

INIT_SAMPLE_TOKENS = 16_384
"""Tokens whose geometric median initialises the SAE's b_dec."""


@dataclass(frozen=True)
class DataRef:
    """Where a run's contexts and activations live."""

    dataset_id: str
    layer: int
    activations_path: str
    """The cached residual stream [n_contexts * ctx_len, d_model]; "" when streaming from the model."""
    n_contexts: int
    ctx_len: int
    d_model: int


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_subject(cfg: RunConfig):
    from sae.data.subject import load_subject_model

    return load_subject_model(cfg.model, device=resolve_device(cfg.device))


def resolve_layer(cfg: RunConfig, n_layers: int) -> int:
    layer = n_layers // 2 if cfg.layer is None else cfg.layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"--layer {layer} is out of range: {model_name(cfg)} has blocks 0..{n_layers - 1}")
    return layer


def build_contexts(cfg: RunConfig, subject) -> str:
    """Tokenise the corpus into fixed-length contexts and store them once (table `contexts`)."""
    from sae.data.corpus import load_texts, tokenize_contexts

    store, ds = Store(cfg.store), dataset_id(cfg)
    if _has_contexts(store, ds):
        log.info("contexts for %s already in the store", ds)
        return ds
    texts = load_texts(cfg.corpus)
    contexts = tokenize_contexts(texts, subject.tokenizer, ctx_len=cfg.ctx_len, max_contexts=cfg.max_contexts)
    contexts = [c for c in contexts if len(c) == cfg.ctx_len]  # equal lengths: acts file is [n_ctx * T, d]
    if not contexts:
        raise ValueError(f"corpus {cfg.corpus or 'pydoc topics'} gives no context of {cfg.ctx_len} tokens")
    # ctx_ids are unique across the store's datasets (examples and simulations name a context by ctx_id
    # alone): a new dataset continues after the largest id already stored.
    first = _next_ctx_id(store)
    frame = pl.DataFrame(
        {
            "dataset_id": [ds] * len(contexts),
            "ctx_id": np.arange(first, first + len(contexts), dtype=np.int64),
            "token_ids": contexts,
            "tokens": [subject.tokenizer.convert_ids_to_tokens(c) for c in contexts],
        },
        schema_overrides={"token_ids": pl.List(pl.Int64)},
    )
    store.append("contexts", frame, part=ds)
    log.info("stored %d contexts of %d tokens for %s", len(contexts), cfg.ctx_len, ds)
    return ds


def _has_contexts(store: Store, ds: str) -> bool:
    if not store.has("contexts"):
        return False
    return store.scan("contexts").filter(pl.col("dataset_id") == ds).select(pl.len()).collect().item() > 0


def _next_ctx_id(store: Store) -> int:
    if not store.has("contexts"):
        return 0
    return int(store.scan("contexts").select(pl.col("ctx_id").max()).collect().item()) + 1


def read_contexts(store: Store, ds: str) -> pl.DataFrame:
    """The dataset's contexts ordered by ctx_id."""
    return store.scan("contexts").filter(pl.col("dataset_id") == ds).sort("ctx_id").collect()


def cache_activations(cfg: RunConfig, subject, ds: str, layer: int) -> DataRef:
    """Run the subject model once over every context and keep the residual stream as a .npy file.

    Training (many epochs, many SAEs) and latent caching then read this file instead of the model.
    """
    from sae.data.activation_files import save_activations

    store = Store(cfg.store)
    contexts = read_contexts(store, ds)
    n_ctx = contexts.height
    if cfg.stream_activations:
        return DataRef(ds, layer, "", n_ctx, cfg.ctx_len, subject.d_model)
    path = store.cache_dir("activations") / f"{activations_id(cfg, layer)}.npy"
    ref = DataRef(ds, layer, str(path), n_ctx, cfg.ctx_len, subject.d_model)
    if path.exists():
        log.info("activations already cached at %s", path)
        return ref
    batches = subject.iter_activation_batches(contexts["token_ids"].to_list(), layer, batch_size=64,
                                              ctx_ids=contexts["ctx_id"].to_list())
    save_activations(path, (acts.reshape(-1, acts.shape[-1]) for _ids, acts, _valid in batches))
    return ref


def train_or_load_sae(cfg: RunConfig, data: DataRef) -> str:
    """Train a TopK SAE on the cached activations (or load `--sae`) and store it; returns the sae_id."""
    from sae.formats import load_sae, save_sae

    store = Store(cfg.store)
    sid = sae_id(cfg, data.layer)
    directory = store.sae_dir(sid)
    if (directory / "cfg.json").exists():
        log.info("SAE %s already in the store", sid)
        return sid
    meta = {"model": model_name(cfg), "layer": data.layer, "dataset_id": data.dataset_id}
    if cfg.sae:
        sae, stats = load_sae(cfg.sae), None
        if sae.cfg.d_in != data.d_model:
            raise ValueError(f"--sae has d_in {sae.cfg.d_in} but {model_name(cfg)} has d_model {data.d_model}")
        meta["source"] = str(cfg.sae)
    else:
        sae, stats = _train(cfg, data)
        log.info("trained SAE %s: %s", sid, {k: round(v, 4) for k, v in stats.items() if isinstance(v, float)})
    # Saved beside the final name and renamed, so a crash never leaves a half-written SAE that a rerun trusts.
    staging = directory.with_name(f".{sid}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_sae(sae, staging, metadata=meta, training_stats=stats)
    staging.rename(directory)
    return sid


def _train(cfg: RunConfig, data: DataRef):
    from sae.config import SAEConfig, TrainConfig
    from sae.train import train_sae

    sae_cfg = SAEConfig(d_in=data.d_model, n_latents=cfg.n_latents, k=cfg.k, dead_tokens=cfg.dead_tokens)
    train_cfg = TrainConfig(tokens=cfg.train_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
                            device=resolve_device(cfg.device))
    batches, init_sample = _training_batches(cfg, data)
    result = train_sae(sae_cfg, train_cfg, batches, init_sample)
    return result.sae, dict(result.stats)


def _training_batches(cfg: RunConfig, data: DataRef):
    """(shuffled batches [batch, d] for train_tokens tokens, init sample [n, d]) from the file or the model."""
    if data.activations_path:
        from sae.data.activation_files import open_activations, shuffled_batches

        acts = open_activations(data.activations_path)
        batches = shuffled_batches(acts, cfg.batch_size, cfg.train_tokens, seed=cfg.seed)
        return batches, sample_rows(acts, INIT_SAMPLE_TOKENS, seed=cfg.seed)
    from sae.data.subject import streaming_token_batches

    subject = load_subject(cfg)
    contexts = read_contexts(Store(cfg.store), data.dataset_id)["token_ids"].to_list()
    init = next(streaming_token_batches(subject, contexts, data.layer, INIT_SAMPLE_TOKENS,
                                        n_tokens=INIT_SAMPLE_TOKENS, seed=cfg.seed + 1))
    batches = streaming_token_batches(subject, contexts, data.layer, cfg.batch_size, n_tokens=cfg.train_tokens,
                                      seed=cfg.seed)
    return batches, init


def sample_rows(acts: np.ndarray, n: int, seed: int):
    """Up to `n` random rows of an activation matrix [tokens, d] as a tensor [n, d] (b_dec init)."""
    import torch

    rows = np.random.default_rng(seed).choice(len(acts), size=min(n, len(acts)), replace=False)
    return torch.from_numpy(np.asarray(acts[np.sort(rows)], dtype=np.float32))


def load_stored_sae(store: Store, sid: str, device: str = "cpu"):
    from sae.formats import load_sae

    return load_sae(Path(store.sae_dir(sid))).to(resolve_device(device)).eval()
