"""Read the logit lens of an SAE's latents (explain/latents/logit_lens.py, written by the latent-cache
stage) for the pages: top promoted and suppressed output tokens, or why there are none."""

from __future__ import annotations

import json

import polars as pl

from flows.store import Store

NO_LENS_FILE = "logit_lens.json"
"""In `saes/<sae_id>/`: {"none": reason} when the subject model has no unembedding (an encoder)."""


def latent_logits(store: Store, sae_id: str, latents: list[int] | None = None) -> dict[int, dict] | dict[str, str]:
    """{latent: {"promoted": [[token, logit]], "suppressed": [...]}}; {"none": why} when the model has no
    unembedding; {} when the stage has not computed it."""
    marker = store.sae_dir(sae_id) / NO_LENS_FILE
    if marker.exists():
        try:
            return {"none": str(json.loads(marker.read_text()).get("none", "no unembedding"))}
        except json.JSONDecodeError:
            return {"none": "no unembedding"}
    directory = store.root / "latent_logits"
    if not directory.is_dir() or not any(directory.rglob("*.parquet")):
        return {}
    frame = pl.scan_parquet(sorted(directory.rglob("*.parquet"))).filter(pl.col("sae_id") == sae_id)
    if latents is not None:
        frame = frame.filter(pl.col("latent").is_in(latents))
    out: dict[int, dict] = {}
    for latent, direction, token, logit in (frame.sort("latent", "direction", "rank")
                                            .select("latent", "direction", "token", "logit").collect().iter_rows()):
        entry = out.setdefault(int(latent), {"promoted": [], "suppressed": []})
        entry[direction].append([token, round(float(logit), 3)])
    return out


def logits_for(lens: dict, latent: int) -> dict | None:
    """The page's `logits` entry of one latent from latent_logits' answer."""
    if "none" in lens:
        return {"none": lens["none"]}
    return lens.get(latent)
