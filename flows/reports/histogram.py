"""Activation histograms of latents from the sparse latent cache (`latent_acts`).

Bins are equal-width on [0, max_act] per latent, left-closed and the last closed (numpy.histogram's
rule), so every latent's histogram uses its own scale; the
count of each bin is exact (every cached non-zero activation), and the firing density is latent_stats'
frequency (active tokens / cached tokens).
"""

from __future__ import annotations

import polars as pl

from flows.store import Store

N_BINS = 24
"""Bins of a latent's activation histogram."""


def activation_histograms(store: Store, sae_id: str, latents: list[int] | None = None,
                          n_bins: int = N_BINS) -> dict[int, dict]:
    """Per latent: {"edges": [n_bins + 1], "counts": [n_bins]} of its non-zero activations.

    `latents`: only these (a served page asks for one; predicate pushdown keeps that read small);
    None: every latent of the SAE in one group-by pass over the cache.
    """
    if not store.has("latent_acts"):
        return {}
    acts = store.scan("latent_acts").filter(pl.col("sae_id") == sae_id)
    if latents is not None:
        acts = acts.filter(pl.col("latent").is_in(latents))
    top = pl.col("value").max().over("latent")
    binned = (acts.select("latent", "value")
              .with_columns(top.alias("top"))
              .with_columns((pl.col("value") / pl.col("top") * n_bins).floor().cast(pl.Int32)
                            .clip(0, n_bins - 1).alias("bin"))
              .group_by("latent", "bin").agg(pl.len().alias("n"), pl.col("top").first())
              .collect())
    out: dict[int, dict] = {}
    for latent, frame in binned.partition_by("latent", as_dict=True).items():
        top_value = float(frame["top"][0])
        counts = [0] * n_bins
        for b, n in zip(frame["bin"].to_list(), frame["n"].to_list(), strict=True):
            counts[b] = int(n)
        edges = [round(top_value * i / n_bins, 4) for i in range(n_bins + 1)]
        out[int(latent[0])] = {"edges": edges, "counts": counts}
    return out
