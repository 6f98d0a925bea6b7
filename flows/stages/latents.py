"""Stages from a trained SAE to per-latent examples: encode the corpus, latent stats, sampling.

The sparse cache (`latent_acts`) of one SAE is written into a staging directory and moved into the
table in one rename when complete, so a crash mid-way leaves no partial cache that a resume would
double count; `latent_stats` rows for the SAE mark the cache as finished.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from flows.config import RunConfig
from flows.stages.data import DataRef, load_stored_sae, load_subject, read_contexts
from flows.store import Store

log = logging.getLogger(__name__)

ENCODE_BATCH_CONTEXTS = 256


def _rows_for(store: Store, table: str, sid: str) -> int:
    if not store.has(table):
        return 0
    return store.scan(table).filter(pl.col("sae_id") == sid).select(pl.len()).collect().item()


def cache_latents(cfg: RunConfig, data: DataRef, sid: str) -> int:
    """Encode every context with the SAE; write sparse activations and per-latent stats.

    Returns the number of latents. Memory: one batch of contexts plus the stats accumulator.
    """
    from explain.latents.cache import LatentStatsAccumulator, sparse_activation_frame

    store = Store(cfg.store)
    sae = load_stored_sae(store, sid, cfg.device)
    n_latents = sae.cfg.n_latents
    if _rows_for(store, "latent_stats", sid):
        log.info("latent cache for %s already complete", sid)
        return n_latents
    staging = store.cache_dir("staging") / f"latent_acts-{sid}"
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a crashed attempt
    staging.mkdir(parents=True)
    accumulator = LatentStatsAccumulator(n_latents)
    device = next(sae.parameters()).device
    for part, (ctx_ids, acts, valid) in enumerate(_activation_batches(cfg, data)):
        B, T, d = acts.shape
        with torch.no_grad():
            values, indices = sae.encode(acts.reshape(B * T, d).to(device))
        frame = sparse_activation_frame(ctx_ids, values.view(B, T, -1), indices.view(B, T, -1), valid)
        accumulator.update(frame)
        frame.with_columns(pl.lit(sid).alias("sae_id")).write_parquet(staging / f"part-{part:06d}.parquet")
    table_dir = store.table_dir("latent_acts") / sid
    table_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(table_dir, ignore_errors=True)
    staging.rename(table_dir)
    stats = accumulator.finalize(sid, n_tokens=data.n_contexts * data.ctx_len)
    store.append("latent_stats", stats, part=sid)
    n_ok = stats.filter(pl.col("status") == "ok").height
    log.info("%d of %d latents have enough activations to explain", n_ok, n_latents)
    return n_latents


def _activation_batches(cfg: RunConfig, data: DataRef):
    """(ctx_ids [B], acts [B, T, d], valid [B, T]) for every context, from the cached file or the model."""
    contexts = read_contexts(Store(cfg.store), data.dataset_id)
    ctx_ids = contexts["ctx_id"].to_numpy()
    if not data.activations_path:
        subject = load_subject(cfg)
        yield from subject.iter_activation_batches(contexts["token_ids"].to_list(), data.layer,
                                                   ENCODE_BATCH_CONTEXTS, ctx_ids=ctx_ids)
        return
    from sae.data.activation_files import open_activations

    acts, T = open_activations(data.activations_path), data.ctx_len  # row r * T + t: context r, token t
    for start in tqdm(range(0, data.n_contexts, ENCODE_BATCH_CONTEXTS), desc="encode latents", unit="batch"):
        stop = min(start + ENCODE_BATCH_CONTEXTS, data.n_contexts)
        rows = np.array(acts[start * T: stop * T], dtype=np.float32)
        yield (torch.from_numpy(ctx_ids[start:stop]), torch.from_numpy(rows).view(stop - start, T, -1),
               torch.ones(stop - start, T, dtype=torch.bool))


def read_stats(store: Store, sid: str) -> pl.DataFrame:
    return store.scan("latent_stats").filter(pl.col("sae_id") == sid).sort("latent").collect()


def selected_latents(stats: pl.DataFrame, max_latents: int | None) -> list[int]:
    """Latents to explain: status ok, lowest ids first, at most `max_latents`."""
    latents = stats.filter(pl.col("status") == "ok")["latent"].to_list()
    return latents[:max_latents] if max_latents else latents


def sample_latent_examples(cfg: RunConfig, data: DataRef, sid: str) -> int:
    """Draw each latent's explain and score examples (table `examples`); returns the row count."""
    from explain.sampling.examples import SamplingConfig, sample_examples

    store = Store(cfg.store)
    existing = _rows_for(store, "examples", sid)
    if existing:
        log.info("examples for %s already sampled", sid)
        return existing
    stats = read_stats(store, sid)
    keep = set(selected_latents(stats, cfg.max_latents))
    stats = stats.with_columns(
        pl.when(pl.col("latent").is_in(list(keep)) | (pl.col("status") != "ok"))
        .then(pl.col("status")).otherwise(pl.lit("not_selected")).alias("status")
    )
    nonzeros = pl.scan_parquet(str(store.table_dir("latent_acts") / sid / "*.parquet"))
    contexts = read_contexts(store, data.dataset_id)
    examples = sample_examples(nonzeros, contexts, stats, SamplingConfig(seed=cfg.seed), sid)
    store.append("examples", examples, part=sid)
    return examples.height


def load_records(store: Store, sid: str, dataset: str, latents: list[int] | None = None):
    """LatentRecords of `sid` (optionally only `latents`), ordered by latent."""
    from explain.records import build_latent_records

    examples = store.scan("examples").filter(pl.col("sae_id") == sid)
    if latents is not None:
        examples = examples.filter(pl.col("latent").is_in(latents))
    return build_latent_records(examples.collect(), read_contexts(store, dataset), read_stats(store, sid))
