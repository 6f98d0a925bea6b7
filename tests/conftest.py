"""Shared fixtures. Prefect gets its own home per session and one test server (docs/architecture.md, "Prefect")."""

from __future__ import annotations

import os
import tempfile

import pytest

# Before anything imports prefect: a private PREFECT_HOME, no telemetry.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="latent-atlas-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


@pytest.fixture
def one_thread():
    """Tiny tensors: OpenMP threads only add overhead (and noise on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session; only integration tests ask for it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


TINY_RUN = dict(data={"max_contexts": 160, "layer": 2}, sae={"n_latents": 512, "k": 16, "dead_tokens": 20_000},
                train={"tokens": 40_000, "batch_size": 1024}, max_latents=60)
"""A whole pipeline in about a minute: real MiniLM, 160 pydoc contexts, a 512-latent SAE."""


@pytest.fixture(scope="session")
def tiny_run(prefect_server, tmp_path_factory):
    """(RunConfig, summary) of one finished default-explainer pipeline run on a tiny config."""
    from flows.config import RunConfig
    from flows.pipeline import pipeline

    cfg = RunConfig(store=str(tmp_path_factory.mktemp("store")), **TINY_RUN)
    return cfg, pipeline(cfg)
