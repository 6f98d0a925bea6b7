"""Checks of a RunConfig before any work starts (and before any Prefect flow), so a user mistake is one
line naming the input and the fix, within seconds, not a traceback from deep inside a flow after
minutes of work.

In order, cheapest first: the device, the store (a file can be created in it), the corpus (exists,
non-empty, UTF-8; a bare name must be a Hugging Face dataset), the LLM settings and, when the run will
call the LLM, the endpoint itself (flows/cli/preflight_llm.py), then the subject model's config (a local
path exists; --layer in range) and the SAE file (header readable, d_in equal to the model's width, saved
layer and model as requested unless --force). k and n_latents are checked when the config is built
(sae/config.py). Nothing here loads weights or reads more than the corpus bytes and a few headers.
"""

from __future__ import annotations

import os
from pathlib import Path

from flows.cli.preflight_inputs import check_corpus, check_device, check_store, model_config
from flows.cli.preflight_inputs import n_layers as model_layers
from flows.cli.preflight_inputs import width as model_width
from flows.config import RunConfig


def check_run_config(cfg: RunConfig, llm: bool = True, inputs: bool = True) -> None:
    """Raise ValueError / FileNotFoundError / PermissionError with a one-line message for the first
    problem found. `llm`: also check the LLM settings and (unless a dry run) the endpoint, for the commands
    that explain or score; `inputs`: also check the corpus, the model and the SAE file (commands that
    only read a store's tables need neither)."""
    check_device(cfg.device)
    check_store(Path(cfg.store))
    if inputs:
        check_corpus(cfg.data.corpus)
    if llm:
        _check_llm(cfg)  # before the model: openai imports in 1 s, transformers and torch in 5
    if inputs:
        _check_model_and_sae(cfg)


def require_store(store: str | Path) -> None:
    """Commands that read a store (all but run, encode and train-sae) never create one: a missing
    directory is a typo, not an empty store."""
    path = Path(store)
    if not path.exists():
        raise FileNotFoundError(f"--store {store}: no such store (`latent-atlas run` or `encode` creates one)")
    if not path.is_dir():
        raise NotADirectoryError(f"--store {store}: not a directory")


def _check_model_and_sae(cfg: RunConfig) -> None:
    """Read only the model's config.json (never its weights) to check --layer and the SAE's width."""
    if cfg.data.layer is not None and cfg.data.layer < 0:
        raise ValueError(f"--layer must be >= 0, got {cfg.data.layer}")
    config = model_config(cfg.data.model)
    blocks = model_layers(config) if config is not None else None
    if cfg.data.layer is not None and blocks is not None and cfg.data.layer >= blocks:
        raise ValueError(f"--layer {cfg.data.layer} is out of range: the model has blocks 0..{blocks - 1}")
    if not cfg.sae_path:
        return
    from flows.cli.preflight_sae import check_sae
    from flows.store.ids import model_name

    layer = cfg.data.layer if cfg.data.layer is not None else (blocks // 2 if blocks is not None else None)
    d_model = model_width(config) if config is not None else None
    check_sae(cfg.sae_path, d_model, layer, model_name(cfg), cfg.force)


def _check_llm(cfg: RunConfig) -> None:
    if not cfg.needs_llm():
        return
    if not cfg.llm.model:
        wants = "--explainer llm" if cfg.explainer == "llm" else f"--scorers {','.join(cfg.scorers)}"
        raise ValueError(f"{wants} needs an LLM: pass --llm-model (and --llm-base-url for a local server)")
    if cfg.dry_run:
        return  # a dry run sends nothing: neither a key nor a reachable server is needed
    if not cfg.llm.base_url and not os.environ.get(cfg.llm.api_key_env):
        raise ValueError(f"no API key: set {cfg.llm.api_key_env} or pass --llm-base-url for a local server")
    from explain.llm.settings import LLMSettings
    from flows.cli.preflight_llm import check_llm_endpoint

    # the client's settings as flows/stages/llm_session.py builds them (the model is set, checked above),
    # without importing the flows (and Prefect, 4 s) before the check
    check_llm_endpoint(LLMSettings(**cfg.llm.model_dump()))
