"""kill -9 in the middle of explaining, rerun and kill -9 again in the middle of scoring, then rerun:
nothing written twice, the same final tables as a run that was never interrupted, and each killed run's
temporary Prefect server gone with it (the LLM path, so both stages are slow enough to be caught mid-way).
The kill matrix over every stage is tests/reliability/test_crash_matrix.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from fixtures.llm_server import LLMTestServer
from reliability.crash import guarded_servers, leftover_files, run_argv, run_env, wait_gone

from flows.store import Store
from flows.store.schemas import table_schema

pytestmark = pytest.mark.integration

VOLATILE = ("run_id", "created_at", "started_at", "finished_at")


def _argv(store: Path, base_url: str) -> list[str]:
    return run_argv(store, base_url, train_tokens=40_000, max_latents=24)


def _env(tmp_path: Path) -> dict[str, str]:
    return run_env(tmp_path / "prefect-home")  # each subprocess: its own temporary server


def _tables(store: Store) -> dict[str, pl.DataFrame]:
    out = {}
    for table in ("explanations", "scores", "simulations", "examples"):
        frame = store.read(table)
        frame = frame.drop([c for c in VOLATILE if c in frame.columns])
        out[table] = frame.sort([c for c in table_schema(table).key if c in frame.columns])
    return out


def _kill_when(argv: list[str], env: dict, table: Path, base: int) -> None:
    """Start a run and kill -9 its process group once `table` has more parts than `base`."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(table.glob("*.parquet"))) > base:
            break
        time.sleep(0.2)
    servers = guarded_servers(proc.pid)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # its server has its own session: the kill does not reach it
    proc.wait()
    assert servers and wait_gone(servers, 20), "the killed run's Prefect server outlived it"


def test_kill_9_during_explain_and_score_then_rerun_gives_the_uninterrupted_tables(tiny_run, tmp_path):
    cfg, _ = tiny_run
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for store in (killed, whole):
        shutil.copytree(cfg.store, store)
    env = _env(tmp_path)
    with LLMTestServer(latency_s=0.1) as server:
        argv = _argv(killed, server.base_url)
        # the first LLM explanation part: the explain stage is under way
        _kill_when(argv, env, Store(killed).table_dir("explanations"),
                   len(list(Path(cfg.store, "explanations").glob("*.parquet"))))
        partial = Store(killed).read("explanations").filter(pl.col("explainer") == "llm")
        assert 0 < partial.height < 24  # some chunks done, not all
        # rerun, killed again once the first LLM scoring chunk has committed
        _kill_when(argv, env, Store(killed).table_dir("scores"), len(list(Path(cfg.store, "scores").glob("*.parquet"))))
        for store in (killed, whole):
            done = subprocess.run(_argv(store, server.base_url), env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
    a, b = _tables(Store(killed)), _tables(Store(whole))
    for table in a:
        key = [c for c in table_schema(table).key if c in a[table].columns]
        assert a[table].select(key).is_duplicated().sum() == 0, table  # no key written twice
        assert a[table].equals(b[table]), table
    assert leftover_files(Store(killed)) == []
    assert Store(killed).read("runs").filter(pl.col("status") == "killed").height == 2
