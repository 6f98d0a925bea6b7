"""Names of things in the store and the resume keys of each stage, derived from content and settings.

An id changes exactly when something that shapes the stored rows changes, and never because of how an
input was named or what else the store holds:

- `dataset_id`: the corpus text (a content hash), the tokenizer (a hash of its vocabulary), the context
  length and cap. The same text under two paths is one dataset; an edited file is another.
- `ctx_id`: the dataset's 31-bit prefix in the high bits and the context's index in the dataset in the
  low 32 bits, so ids are unique across a store's datasets and a context's id does not depend on the
  order in which datasets arrived. Sampling hashes only the index (explain/sampling/keys.py).
- `activations_id` and `sae_id`: the dataset, the model's weights fingerprint, the layer and, for a
  trained SAE, every training setting; for a loaded SAE, a hash of its files' content.
- Stage keys, each chained on the one before it, so a changed setting recomputes its stage and every
  stage after it while the old rows stay, keyed by what produced them:
  `stats_key` (latent_stats) -> `sample_key` (examples) -> `explain_key` (explanations) ->
  `score_key` (simulations, scores).
"""

from __future__ import annotations

import re
from pathlib import Path

from explain.sampling.config import EXAMPLES_VERSION
from flows.config import RunConfig, key_fields, stable_hash

EMBEDDED_MODEL = "all-MiniLM-L6-v2"
EMBEDDED_CORPUS = "pydoc-topics"
CTX_INDEX_BITS = 32
"""Low bits of a ctx_id: the context's index inside its dataset."""


def slug(text: str, max_len: int = 32) -> str:
    """Filesystem- and URL-safe short name: `sentence-transformers/all-MiniLM` -> `all-minilm`."""
    tail = Path(text.rstrip("/")).name or text
    return re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[:max_len] or "x"


def model_name(cfg: RunConfig) -> str:
    return cfg.data.model or EMBEDDED_MODEL


def dataset_id(cfg: RunConfig, corpus_fingerprint: str, tokenizer_fingerprint: str) -> str:
    """Contexts depend on the corpus text, the tokenizer and how the text is cut."""
    key = {"corpus": corpus_fingerprint, "tokenizer": tokenizer_fingerprint, "ctx_len": cfg.data.ctx_len,
           "max_contexts": cfg.data.max_contexts}
    # The name part says what kind of corpus, never its path: the same text under two names is one dataset.
    return f"{EMBEDDED_CORPUS if cfg.data.corpus is None else 'corpus'}-{stable_hash(key, 8)}"


def ctx_id_base(dataset: str) -> int:
    """First ctx_id of a dataset: a 31-bit prefix from its id, shifted past the index bits."""
    prefix = int(stable_hash({"dataset": dataset}, 8), 16) & 0x7FFFFFFF
    return prefix << CTX_INDEX_BITS


def activations_id(dataset: str, model_type: str, model_fingerprint: str, layer: int) -> str:
    return f"{dataset}-{slug(model_type)}-L{layer}-{stable_hash({'model': model_fingerprint}, 6)}"


def sae_id(cfg: RunConfig, dataset: str, model_type: str, model_fingerprint: str, layer: int, d_in: int,
           sae_fingerprint: str = "") -> str:
    """A trained SAE is named by everything that shaped it; a loaded one by its content.

    The readable part comes from content too (the model's architecture, never a path), so the same
    model or SAE under two paths is one id. A loaded SAE applied to another corpus or layer is another
    set of results, so those are in its id too.
    """
    key = {"data": dataset, "model": model_fingerprint, "layer": layer}
    if cfg.sae_path:
        key["sae"] = sae_fingerprint
        return f"loaded-{slug(model_type)}-L{layer}-{stable_hash(key, 8)}"
    train = key_fields(cfg.model_copy(update={"train": cfg.train.with_resolved_lr(cfg.sae.n_latents, d_in)}), "train")
    key.update(sae=key_fields(cfg, "sae"), train=train, stream=cfg.data.stream_activations)
    return f"{slug(model_type)}-L{layer}-n{cfg.sae.n_latents}-k{cfg.sae.k}-{stable_hash(key, 8)}"


def stats_key(cfg: RunConfig) -> str:
    """latent_stats of an SAE: the statistics settings (statuses, co-occurrence sketch)."""
    return stable_hash({"stats": key_fields(cfg, "stats")}, 10)


def sample_key(cfg: RunConfig) -> str:
    """examples: which latents qualify (stats), how their example sets are drawn (sampling) and what
    the sampling code writes for them (EXAMPLES_VERSION: new columns such as the weights)."""
    return stable_hash({"stats": stats_key(cfg), "sampling": key_fields(cfg, "sampling"),
                        "examples": EXAMPLES_VERSION}, 10)


def explain_key(sample: str, explainer_identity: dict) -> str:
    """explanations: the examples shown and everything about the explainer (model, prompt version...)."""
    return stable_hash({"sample": sample, "explainer": explainer_identity}, 10)


def score_key(explain: str, scorer_identity: dict) -> str:
    """simulations and scores: the explanations scored and everything about the scorer."""
    return stable_hash({"explain": explain, "scorer": scorer_identity}, 10)
