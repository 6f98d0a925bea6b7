"""The latent-cache stage: encode the corpus with the SAE (`latent_acts`) and per-latent statistics.

The sparse cache of one SAE is written into a staging directory and moved into the table in one
rename when complete, so a crash mid-way leaves no partial cache that a resume would double count.
Statistics are keyed by `stats_key` (flows/store/ids.py): changed statistics settings recompute them
from the stored cache without encoding again, and the old rows stay.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from flows.config import RunConfig, parse_latents
from flows.stages.data import DataRef, load_subject, read_contexts
from flows.stages.sae import load_stored_sae
from flows.store import Store
from flows.store.ids import stats_key
from flows.store.store import StoreError, scan_parts

log = logging.getLogger(__name__)

ENCODE_BATCH_CONTEXTS = 256


def latent_acts_dir(store: Store, sid: str):
    return store.table_dir("latent_acts") / sid


def scan_latent_acts(store: Store, sid: str) -> pl.LazyFrame:
    """The sparse cache of `sid` (rows ctx_id, pos, latent, value, sae_id), every part's footer checked: a
    truncated part is named in a one-line StoreError whose fix is rebuilding the SAE's cache."""
    directory = latent_acts_dir(store, sid)
    try:
        return scan_parts(sorted(directory.glob("*.parquet")))
    except StoreError as exc:
        raise StoreError(f"{exc}; for the latent cache delete the folder {directory} and rerun") from None


def read_latent_acts(store: Store, sid: str, latents: list[int]) -> pl.DataFrame:
    """The cached activations of `latents`: rows (ctx_id, pos, latent, value), value > 0."""
    return scan_latent_acts(store, sid).filter(pl.col("latent").is_in(latents)).drop("sae_id").collect()


def cache_latents(cfg: RunConfig, data: DataRef, sid: str) -> int:
    """Encode every context with the SAE (once per SAE) and store the latent statistics of the run's
    `stats_key`. Returns the number of latents. Memory: one batch of contexts plus the accumulator."""
    from explain.latents.cache import sparse_activation_frame
    from explain.latents.stats import LatentStatsAccumulator

    store, key = Store(cfg.store), stats_key(cfg)
    sae = load_stored_sae(store, sid, cfg.device)
    n_latents = sae.cfg.n_latents
    from flows.stages.logit_lens import ensure_logit_lens

    ensure_logit_lens(cfg, store, sid, sae.W_dec)  # once per SAE; its own check, before the statistics' early return
    if read_stats(store, sid, key).height:
        log.info("latent statistics for %s (stats %s) already complete", sid, key)
        return n_latents
    accumulator = LatentStatsAccumulator(n_latents, cfg=cfg.stats)
    if latent_acts_dir(store, sid).exists():  # cache done earlier, statistics settings changed since
        log.info("latent cache for %s exists: recomputing statistics for stats %s", sid, key)
        scan_latent_acts(store, sid)  # every part readable, else a one-line error naming it
        for part in sorted(latent_acts_dir(store, sid).glob("*.parquet")):
            accumulator.update(pl.read_parquet(part).drop("sae_id"))
    else:
        staging = store.cache_dir("staging") / f"latent_acts-{sid}"
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a crashed attempt
        staging.mkdir(parents=True)
        device = next(sae.parameters()).device
        for part, (ctx_ids, acts, valid) in enumerate(_activation_batches(cfg, data)):
            B, T, d = acts.shape
            with torch.no_grad():
                values, indices = sae.encode(acts.reshape(B * T, d).to(device))
            frame = sparse_activation_frame(ctx_ids, values.view(B, T, -1), indices.view(B, T, -1), valid)
            accumulator.update(frame)
            frame.with_columns(pl.lit(sid).alias("sae_id")).write_parquet(staging / f"part-{part:06d}.parquet")
        latent_acts_dir(store, sid).parent.mkdir(parents=True, exist_ok=True)
        staging.rename(latent_acts_dir(store, sid))
    stats = accumulator.finalize(sid, n_tokens=data.n_contexts * data.ctx_len)
    store.append("latent_stats", stats.with_columns(pl.lit(key).alias("stats_key")), part=sid)
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


def read_stats(store: Store, sid: str, key: str) -> pl.DataFrame:
    """latent_stats rows of one SAE under one stats_key, by latent (empty if not computed)."""
    if not store.has("latent_stats"):
        return pl.DataFrame()
    return (store.scan("latent_stats").filter((pl.col("sae_id") == sid) & (pl.col("stats_key") == key))
            .sort("latent").collect())


def selected_latents(stats: pl.DataFrame, max_latents: int | None, latents: str | None = None,
                     seed: int = 0) -> list[int]:
    """Latents to explain: status ok, restricted to the `--latents` selection (ranges, or a seeded
    random sample of the ok latents), lowest ids first, at most `max_latents`."""
    ok = stats.filter(pl.col("status") == "ok")["latent"].to_list() if stats.height else []
    if latents is not None:
        ranges, n_sample = parse_latents(latents)
        if n_sample is not None:
            pick = np.random.default_rng([seed, 0x5E1EC7]).choice(len(ok), size=min(n_sample, len(ok)), replace=False)
            ok = sorted(ok[i] for i in pick)
        else:
            ok = [lat for lat in ok if any(lo <= lat <= hi for lo, hi in ranges)]
    return ok[:max_latents] if max_latents else ok
