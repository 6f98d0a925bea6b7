"""Names of things in the store, derived from their inputs so that a rerun finds its own work."""

from __future__ import annotations

import re
from pathlib import Path

from flows.config import RunConfig, stable_hash

EMBEDDED_MODEL = "all-MiniLM-L6-v2"
EMBEDDED_CORPUS = "pydoc-topics"


def slug(text: str, max_len: int = 32) -> str:
    """Filesystem- and URL-safe short name: `sentence-transformers/all-MiniLM` -> `all-minilm`."""
    tail = Path(text.rstrip("/")).name or text
    return re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[:max_len] or "x"


def model_name(cfg: RunConfig) -> str:
    return cfg.model or EMBEDDED_MODEL


def dataset_id(cfg: RunConfig) -> str:
    """Contexts depend on the corpus, the tokenizer (the model) and the context length."""
    key = {"corpus": cfg.corpus or EMBEDDED_CORPUS, "model": model_name(cfg), "ctx_len": cfg.ctx_len,
           "max_contexts": cfg.max_contexts}
    return f"{slug(cfg.corpus or EMBEDDED_CORPUS)}-{stable_hash(key, 8)}"


def activations_id(cfg: RunConfig, layer: int) -> str:
    return f"{dataset_id(cfg)}-{slug(model_name(cfg))}-L{layer}"


def sae_id(cfg: RunConfig, layer: int) -> str:
    """A trained SAE is named by everything that shaped it; a loaded one by its path."""
    if cfg.sae:  # the same SAE file on another corpus or layer is another set of results
        key = {"sae": str(Path(cfg.sae).resolve()), "data": dataset_id(cfg), "layer": layer}
        return f"{slug(cfg.sae)}-{stable_hash(key, 8)}"
    key = {"data": dataset_id(cfg), "model": model_name(cfg), "layer": layer, "n": cfg.n_latents, "k": cfg.k,
           "tokens": cfg.train_tokens, "batch": cfg.batch_size, "dead": cfg.dead_tokens, "seed": cfg.seed}
    if cfg.stream_activations:  # another batch order, another SAE (absent otherwise: existing ids stay)
        key["stream"] = True
    return f"{slug(model_name(cfg))}-L{layer}-n{cfg.n_latents}-k{cfg.k}-{stable_hash(key, 8)}"
