"""The sampling stage: each selected latent's explain and score example sets (table `examples`).

Rows are keyed by `sample_key` (the statistics and sampling settings, flows/store/ids.py). A latent's
examples depend only on that latent and the data, so the stage samples just the selected latents that
have no rows under the run's key yet: a larger `--max-latents` adds latents, a changed sampling setting
samples again under a new key, and the old rows stay.
"""

from __future__ import annotations

import logging

import polars as pl

from flows.config import RunConfig
from flows.stages.data import DataRef, read_contexts
from flows.stages.latents import read_stats, scan_latent_acts, selected_latents
from flows.store import Store
from flows.store.ids import sample_key, stats_key

log = logging.getLogger(__name__)


def sampled_latents(store: Store, sid: str, key: str) -> set[int]:
    if not store.has("examples"):
        return set()
    frame = (store.scan("examples").filter((pl.col("sae_id") == sid) & (pl.col("sample_key") == key))
             .select("latent").unique().collect())
    return set(frame["latent"].to_list())


def sample_latent_examples(cfg: RunConfig, data: DataRef, sid: str) -> int:
    """Draw the example sets of every selected latent not yet sampled under the run's key; returns
    the number of latents sampled now."""
    from explain.sampling.examples import sample_examples

    store, key = Store(cfg.store), sample_key(cfg)
    stats = read_stats(store, sid, stats_key(cfg))
    wanted = selected_latents(stats, cfg.max_latents, cfg.latents, cfg.seed)
    todo = sorted(set(wanted) - sampled_latents(store, sid, key))
    if not todo:
        log.info("examples for %s (sample %s) already drawn", sid, key)
        return 0
    stats = stats.filter(pl.col("latent").is_in(todo))
    nonzeros = scan_latent_acts(store, sid)
    examples = sample_examples(nonzeros, read_contexts(store, data.dataset_id), stats, cfg.sampling, sid)
    store.append("examples", examples.with_columns(pl.lit(key).alias("sample_key")), part=sid)
    return len(todo)


def load_records(store: Store, cfg: RunConfig, sid: str, dataset: str, latents: list[int] | None = None):
    """LatentRecords of `sid` under the run's sample key (optionally only `latents`), ordered by latent.

    Every examples column travels, the score examples' natural-population `weight` included (null in
    parts sampled before weights existed: such latents get no natural estimate)."""
    from explain.records import build_latent_records

    examples = store.scan("examples").filter((pl.col("sae_id") == sid) & (pl.col("sample_key") == sample_key(cfg)))
    if latents is not None:
        examples = examples.filter(pl.col("latent").is_in(latents))
    return build_latent_records(examples.collect(), read_contexts(store, dataset),
                                read_stats(store, sid, stats_key(cfg)))
