"""Deterministic per-(latent, context) keys and bounded bottom-k pools used by sampling.

Every random choice in sampling is a function of (seed, purpose, latent, context index) through a
splitmix64 hash, so results do not depend on chunk order, worker count or library versions, and
a context's split for a latent is fixed before anything is drawn (explain/score disjoint by
construction). Bottom-k by hash key is a uniform sample without replacement that can be merged
chunk by chunk in O(k) memory per group.
"""

from __future__ import annotations

import numpy as np
import polars as pl

SALT_SPLIT = 1
SALT_QUANTILE = 2
SALT_SIMILAR = 3
SALT_WINDOW = 4
SALT_COOCCURRENCE = 5
SALT_EMBEDDING = 6

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 [n] -> uint64 [n] (wrapping arithmetic)."""
    z = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return z ^ (z >> np.uint64(31))


CTX_INDEX_MASK = 0xFFFFFFFF
"""Low 32 bits of a ctx_id: the context's index in its dataset (the high bits name the dataset)."""


def context_index(ctx_id: np.ndarray) -> np.ndarray:
    """int64 [n] index of each context within its dataset (ctx_id's low 32 bits)."""
    return ctx_id.astype(np.int64) & CTX_INDEX_MASK


def pair_hash(seed: int, salt: int, latent: np.ndarray, ctx_id: np.ndarray) -> np.ndarray:
    """uint64 [n] key of each (latent, context) pair for one (seed, salt) purpose.

    Only the context's index within its dataset enters the hash: a draw is a function of the data,
    not of the id prefix its dataset got in a store.
    """
    base = mix64(np.array([seed * 1_000_003 + salt], dtype=np.uint64))
    h = mix64(base ^ latent.astype(np.int64).view(np.uint64))
    return mix64(h ^ context_index(ctx_id).view(np.uint64))


def unit_interval(h: np.ndarray) -> np.ndarray:
    """uint64 hashes [n] -> floats in [0, 1) [n]."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def split_of(seed: int, latent: np.ndarray, ctx_id: np.ndarray, explain_fraction: float) -> np.ndarray:
    """'explain' or 'score' for each (latent, ctx_id) [n]: the one split that context has for that latent."""
    explain = unit_interval(pair_hash(seed, SALT_SPLIT, latent, ctx_id)) < explain_fraction
    return np.where(explain, "explain", "score")


def sort_key(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> int64 keys with the same order (polars sorts int64 fastest)."""
    return (h >> np.uint64(1)).astype(np.int64)


def descending_key(values: np.ndarray, ctx_id: np.ndarray) -> np.ndarray:
    """int64 [n] keys ordering by value descending, then ctx_id ascending (values >= 0, float32)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32).astype(np.int64)
    return ((0x7FFFFFFF - bits) << 32) | (ctx_id.astype(np.int64) & 0xFFFFFFFF)


def group_id(latent: np.ndarray, *parts: tuple[np.ndarray, int]) -> np.ndarray:
    """int64 [n] id of (latent, part_1, ...) where each part is (values in 0..size-1, size)."""
    gid = latent.astype(np.int64)
    for values, size in parts:
        gid = gid * size + values.astype(np.int64)
    return gid


def keep_bottom_k(frame: pl.DataFrame, group: str, key: str, k: int) -> pl.DataFrame:
    """Rows with the k smallest (unique int64) `key` values within each `group` (no full sort)."""
    if frame.height == 0:
        return frame
    return frame.filter(pl.col(key).rank("ordinal").over(group) <= k)


def merge_bottom_k(pool: pl.DataFrame | None, chunk: pl.DataFrame, group: str, key: str, k: int) -> pl.DataFrame:
    """Merge a chunk's candidates into a bounded pool (at most k rows per `group`)."""
    merged = chunk if pool is None else pl.concat([pool, chunk], how="vertical")
    return keep_bottom_k(merged, group, key, k)
