"""The `fault_run` fixture (import `fault_run_fixture` from here): one LLM run through the CLI against a
server that fails ~30% of requests in every way (429 with Retry-After, 500, a 25 s stall, a 200 with its
body cut in half, prose instead of JSON), with a recognisable API key in the environment and umask 027.
test_llm_faults_run.py checks what the run wrote; test_secrets.py that the key is nowhere and that every
file got the umask's mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.llm_server import LLMTestServer

FAULT_SCHEDULE = ["429", None, None, "500", None, None, "stall", None, None, "truncated_body",
                  None, None, "prose", None, None, None, "429", None, "500", None]
"""6 of every 20 chat requests fail, every kind at least once per cycle (deterministic by arrival order)."""
SECRET = "sk-latent-atlas-SECRET-3f9c1e77b2"
"""A fake key nobody would write by accident: the secrets test searches every output for it."""
RUN_UMASK = 0o027
N_LATENTS = 40
MAX_CONCURRENCY = 4
MAX_COST_USD = 1.0
LLM_MODEL = "gpt-4o-mini"
"""A priced model name (explain/llm/settings.py), so the run's spend is not 0 and --max-cost-usd counts."""
TIMEOUT_S = 3.0
"""Per-request timeout of the run: the 25 s stall costs one timed-out attempt, then a retry (short, yet
long enough that a loaded 2-core machine rarely times out a healthy request)."""


@dataclass
class FaultRun:
    store: Path
    prefect_home: Path
    server: LLMTestServer
    done: subprocess.CompletedProcess
    wall_s: float
    before: dict[Path, int]
    """Files the store held before the run (copied from tiny_run), with their inode numbers."""
    before_dirs: set[Path]
    """Folders the store held before the run."""


def fault_argv(store: Path, base_url: str) -> list[str]:
    """tiny_run's settings (so its data and SAE are reused) with the LLM explainer and simulator."""
    return [sys.executable, "-m", "flows.cli.main", "run", "--store", str(store), "--max-contexts", "160",
            "--layer", "2", "--n-latents", "512", "--k", "16", "--dead-tokens", "20000", "--train-tokens", "40000",
            "--train-batch-size", "1024", "--max-latents", str(N_LATENTS), "--explainer", "llm",
            "--llm-model", LLM_MODEL, "--llm-base-url", base_url, "--llm-max-concurrency", str(MAX_CONCURRENCY),
            "--llm-timeout-s", str(TIMEOUT_S), "--llm-retry-initial-wait-s", "0.05", "--llm-retry-max-wait-s", "2",
            "--max-cost-usd", str(MAX_COST_USD), "--chunk-latents", "20"]


_DONE: list[FaultRun] = []
"""The one run of the session: every module importing the fixture defines its own copy of it."""


@pytest.fixture(scope="session", name="fault_run")
def fault_run_fixture(tiny_run, tmp_path_factory) -> FaultRun:
    """The finished run (see the module docstring); the server's counters survive it."""
    if not _DONE:
        _DONE.append(_run(tiny_run[0].store, tmp_path_factory))
    return _DONE[0]


def _run(tiny_store: str, tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    import time

    root = tmp_path_factory.mktemp("fault-run")
    store, prefect_home = root / "store", root / "prefect-home"
    shutil.copytree(tiny_store, store)
    before = {p: p.stat().st_ino for p in store.rglob("*") if p.is_file()}
    before_dirs = {p for p in store.rglob("*") if p.is_dir()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(prefect_home), OPENAI_API_KEY=SECRET)  # the run's own temporary Prefect server
    server = LLMTestServer().start()
    server.state.schedule, server.state.stall_s, server.state.retry_after = FAULT_SCHEDULE, 25.0, "1"
    server.state.api_key = SECRET  # the key must reach the server (and nothing else)
    started = time.monotonic()
    try:
        done = subprocess.run(fault_argv(store, server.base_url), env=env, capture_output=True, text=True,
                              timeout=600, preexec_fn=lambda: os.umask(RUN_UMASK))
    finally:
        server.stop()
    return FaultRun(store, prefect_home, server, done, time.monotonic() - started, before, before_dirs)
