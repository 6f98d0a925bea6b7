"""Example windows: where a window starts, which windows are duplicates, and their activations."""

from __future__ import annotations

import numpy as np
import polars as pl

from explain.sampling.config import SamplingConfig
from explain.sampling.keys import SALT_WINDOW, pair_hash

PAIR = ["latent", "ctx_id"]


def place_windows(candidates: pl.DataFrame, contexts: pl.DataFrame, cfg: SamplingConfig) -> pl.DataFrame:
    """Add start and length (window = tokens[start : start + length]) to each candidate.

    candidates: latent, ctx_id, anchor (peak / trigger position, -1 for random contexts).
    An anchored window puts the anchor at index peak_offset (clipped to the context); a random
    context gets a start drawn from hash(seed, latent, ctx_id).
    """
    lengths = contexts.select("ctx_id", pl.col("token_ids").list.len().cast(pl.Int64).alias("ctx_len"))
    placed = candidates.join(lengths, on="ctx_id", how="left").with_columns(
        pl.min_horizontal(pl.col("ctx_len"), pl.lit(cfg.window)).alias("length")
    )
    max_start = (placed["ctx_len"] - placed["length"]).to_numpy()
    anchor = placed["anchor"].to_numpy().astype(np.int64)
    drawn = pair_hash(cfg.seed, SALT_WINDOW, placed["latent"].to_numpy(), placed["ctx_id"].to_numpy())
    random_start = (drawn % (max_start + 1).astype(np.uint64)).astype(np.int64)
    start = np.where(anchor >= 0, np.clip(anchor - cfg.peak_offset, 0, max_start), random_start)
    return placed.with_columns(pl.Series("start", start.astype(np.int32))).drop("ctx_len")


def with_window_hash(examples: pl.DataFrame, contexts: pl.DataFrame) -> pl.DataFrame:
    """Add window_hash, a hash of the window's token ids (equal windows -> equal hashes)."""
    hashed = (
        examples.lazy()
        .with_row_index("_row")
        .join(contexts.lazy().select("ctx_id", "token_ids"), on="ctx_id", how="left")
        .select("_row", pl.col("token_ids").list.slice(pl.col("start"), pl.col("length")).hash().alias("window_hash"))
        .collect(engine="streaming")
        .sort("_row")
    )
    return examples.with_columns(hashed["window_hash"])


def gather_acts(nonzeros: pl.LazyFrame, examples: pl.DataFrame, window: int) -> pl.DataFrame:
    """Add acts (list[f32], one value per window token) for the latent of each example.

    examples: latent, ctx_id, start, length. Only the cache rows of the examples' (latent, ctx_id)
    pairs are read (a streamed semi-join), so memory is O(examples x window).
    """
    n = examples.height
    dense = np.zeros((n, max(window, 1)), dtype=np.float32)
    if n:
        index = examples.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64), "start",
                                "length").with_row_index("_row")
        rows = (
            nonzeros.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64), "pos", "value")
            .join(index.lazy().select(PAIR), on=PAIR, how="semi")
            .collect(engine="streaming")
            .join(index, on=PAIR)
            .with_columns((pl.col("pos") - pl.col("start")).alias("offset"))
            .filter((pl.col("offset") >= 0) & (pl.col("offset") < pl.col("length")))
        )
        dense[rows["_row"].to_numpy(), rows["offset"].to_numpy()] = rows["value"].to_numpy()
    acts = pl.DataFrame({"acts": dense[:, :window], "length": examples["length"]}).select(
        pl.col("acts").arr.to_list().list.head(pl.col("length")).cast(pl.List(pl.Float32))
    )
    return examples.with_columns(acts["acts"])
