"""Stages up to the model's activations: contexts of the corpus, and the cached residual stream.

Each stage checks the store first and returns what is already there, so a rerun or a resume after a
crash skips finished work. These are plain functions; flows/pipeline.py wraps them in Prefect flows
that pass ids and paths between stages, never tensors. Inputs are named by content
(flows/store/ids.py): the corpus by a hash of its text, the model by a hash of its weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from flows.config import RunConfig
from flows.store import Store
from flows.store.ids import activations_id, ctx_id_base, dataset_id, model_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataRef:
    """Where a run's contexts and activations live, and what they were computed from."""

    dataset_id: str
    layer: int
    activations_path: str
    """The cached residual stream [n_contexts * ctx_len, d_model]; "" when streaming from the model."""
    n_contexts: int
    ctx_len: int
    d_model: int
    model_fingerprint: str = ""
    """Content hash of the subject model's weights (or its hub revision)."""
    corpus_fingerprint: str = ""
    """Content hash of the corpus text."""
    model_type: str = ""
    """The subject model's architecture (its config's model_type, e.g. "bert", "gpt2")."""


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_subject(cfg: RunConfig):
    from sae.data.subject import load_subject_model

    return load_subject_model(cfg.data.model, device=resolve_device(cfg.device))


def resolve_layer(cfg: RunConfig, n_layers: int) -> int:
    layer = n_layers // 2 if cfg.data.layer is None else cfg.data.layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"--layer {layer} is out of range: {model_name(cfg)} has blocks 0..{n_layers - 1}")
    return layer


def build_contexts(cfg: RunConfig, subject) -> tuple[str, str]:
    """Tokenise the corpus into fixed-length contexts and store them once (table `contexts`).

    Returns (dataset_id, corpus fingerprint). The corpus is read on every run to hash its text: an
    edited file is a new dataset, the same text under another path is the same one.
    """
    from sae.data.corpus import corpus_fingerprint, load_texts, tokenize_contexts

    texts = load_texts(cfg.data.corpus)
    corpus_fp = corpus_fingerprint(texts)
    store, ds = Store(cfg.store), dataset_id(cfg, corpus_fp, subject.tokenizer_fingerprint)
    if _has_contexts(store, ds):
        log.info("contexts for %s already in the store", ds)
        return ds, corpus_fp
    contexts = tokenize_contexts(texts, subject.tokenizer, ctx_len=cfg.data.ctx_len,
                                 max_contexts=cfg.data.max_contexts)
    contexts = [c for c in contexts if len(c) == cfg.data.ctx_len]  # equal lengths: acts file is [n_ctx * T, d]
    if not contexts:
        raise ValueError(f"corpus {cfg.data.corpus or 'pydoc topics'} gives no context of {cfg.data.ctx_len} tokens")
    # ctx_ids are unique across the store's datasets (examples and simulations name a context by ctx_id
    # alone) yet depend only on this dataset: its own prefix, then the context's index.
    first = ctx_id_base(ds)
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
    log.info("stored %d contexts of %d tokens for %s", len(contexts), cfg.data.ctx_len, ds)
    return ds, corpus_fp


def _has_contexts(store: Store, ds: str) -> bool:
    if not store.has("contexts"):
        return False
    return store.scan("contexts").filter(pl.col("dataset_id") == ds).select(pl.len()).collect().item() > 0


def read_contexts(store: Store, ds: str) -> pl.DataFrame:
    """The dataset's contexts ordered by ctx_id."""
    return store.scan("contexts").filter(pl.col("dataset_id") == ds).sort("ctx_id").collect()


def cache_activations(cfg: RunConfig, subject, ds: str, corpus_fp: str, layer: int) -> DataRef:
    """Run the subject model once over every context and keep the residual stream as a .npy file.

    Training (many epochs, many SAEs) and latent caching then read this file instead of the model.
    """
    from sae.data.activation_files import save_activations

    store = Store(cfg.store)
    contexts = read_contexts(store, ds)
    n_ctx, fp = contexts.height, subject.fingerprint
    model_type = str(getattr(subject.model.config, "model_type", "") or "model")
    if cfg.data.stream_activations:
        return DataRef(ds, layer, "", n_ctx, cfg.data.ctx_len, subject.d_model, fp, corpus_fp, model_type)
    path = store.cache_dir("activations") / f"{activations_id(ds, model_type, fp, layer)}.npy"
    ref = DataRef(ds, layer, str(path), n_ctx, cfg.data.ctx_len, subject.d_model, fp, corpus_fp, model_type)
    if path.exists():
        log.info("activations already cached at %s", path)
        return ref
    batches = subject.iter_activation_batches(contexts["token_ids"].to_list(), layer, batch_size=64,
                                              ctx_ids=contexts["ctx_id"].to_list())
    save_activations(path, (acts.reshape(-1, acts.shape[-1]) for _ids, acts, _valid in batches))
    return ref
