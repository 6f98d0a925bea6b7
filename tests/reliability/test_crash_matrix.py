"""kill -9 at random points of every stage, Ctrl-C from a terminal, and the temporary Prefect server.

Each killed run is rerun and its store compared with one uninterrupted run (per module) as sets of rows
on every table's keys and values (volatile columns aside, tests/reliability/crash.py): the same rows, no
key twice, no temporary file left, the same SAE weights, and the killed run recorded as "killed". The
matrix (a seeded random point in each stage) is slow; the default suite presses Ctrl-C once here, kills
explain and then score in tests/flows/test_kill.py, and kills a chunk between its two renames in
tests/reliability/test_store_integrity.py.
"""

from __future__ import annotations

import os
import random
import signal
import time

import polars as pl
import pytest
from crash import (
    STAGES,
    CliRun,
    duplicate_keys,
    guarded_servers,
    leftover_files,
    run_argv,
    run_env,
    sae_digests,
    tables,
    wait_gone,
)
from fixtures.llm_server import LLMTestServer

from flows.store import Store

pytestmark = pytest.mark.integration

MATRIX = [(stage, round(random.Random(stage).uniform(0.1, 0.9), 2)) for stage in STAGES]
"""(stage, fraction of its reference duration at which the kill comes): one seeded point per stage."""


@pytest.fixture(scope="module")
def llm_server():
    with LLMTestServer(latency_s=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def reference(llm_server, tmp_path_factory):
    """(store, stage durations in s) of one uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    run = CliRun(run_argv(root / "store", llm_server.base_url), run_env(root / "prefect"))
    assert run.finish() == 0, run.output[-3000:]
    times = run.stage_times()
    assert set(times) <= set(STAGES) and {"prepare-data", "sae", "explain", "score", "report"} <= set(times), times
    return Store(root / "store"), times


def _stage_start(run: CliRun, stage: str, order: list[str]) -> float | None:
    i = order.index(stage)
    return run.wait_for(r"Beginning flow run") if i == 0 else run.wait_for(f"stage {order[i - 1]} done")


def kill_and_rerun(stage: str, fraction: float, server: LLMTestServer, root, durations: dict) -> Store:
    """Kill -9 a run `fraction` of the way into `stage` (by the reference's duration), check that its
    Prefect server goes with it, rerun it to the end; returns the store."""
    store, env = root / "store", run_env(root / "prefect")
    run = CliRun(run_argv(store, server.base_url), env)
    start = _stage_start(run, stage, list(durations))
    assert start is not None, run.output[-3000:]
    time.sleep(max(0.0, start + fraction * durations[stage] - time.monotonic()))
    servers = guarded_servers(run.proc.pid)
    assert run.proc.poll() is None, f"the run ended before the kill in {stage}"
    os.kill(run.proc.pid, signal.SIGKILL)  # the run alone, as the OOM killer or `kill -9 <pid>` would
    run.finish()
    done = list(run.stage_times())
    assert servers and wait_gone(servers, 20), "the killed run's Prefect server outlived it"
    rerun = CliRun(run_argv(store, server.base_url), env)
    assert rerun.finish() == 0, rerun.output[-3000:]
    print(f"kill -9 in {stage} at {fraction:.2f} (stages done before: {done}): rerun ok")  # noqa: T201
    return Store(store)


def assert_same_as_reference(store: Store, reference: Store) -> None:
    assert duplicate_keys(store) == dict.fromkeys(duplicate_keys(store), 0)
    assert leftover_files(store) == []
    got, want = tables(store), tables(reference)
    for table in want:
        assert got[table].equals(want[table]), table
    assert sae_digests(store) == sae_digests(reference)
    runs = store.read("runs")
    assert runs.filter(pl.col("status") == "killed").height == 1 and runs.filter(pl.col("status") == "ok").height == 1


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "fraction"), MATRIX)
def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_tables(reference, llm_server, tmp_path, stage,
                                                                    fraction):
    ref, durations = reference
    if stage not in durations:
        pytest.skip(f"this pipeline has no stage {stage}")
    assert_same_as_reference(kill_and_rerun(stage, fraction, llm_server, tmp_path, durations), ref)


def test_ctrl_c_exits_within_seconds_with_one_line_and_records_the_run_as_interrupted(llm_server, tmp_path):
    run = CliRun(run_argv(tmp_path / "store", llm_server.base_url), run_env(tmp_path / "prefect"))
    assert run.wait_for(r"Beginning flow run") is not None, run.output[-3000:]
    time.sleep(3)
    servers = guarded_servers(run.proc.pid)
    pressed = time.monotonic()
    os.killpg(run.proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    rc = run.finish(timeout=60)
    took = time.monotonic() - pressed
    assert rc == 130 and took < 20, (rc, took, run.output[-3000:])
    after = [line for at, line in run.lines if at >= pressed]
    assert [line for line in after if line.startswith("latent-atlas:")] == [
        "latent-atlas: interrupted; finished parts are kept, rerun to resume"], run.output[-3000:]
    assert "Traceback" not in run.output and "ConnectError" not in run.output
    assert servers and wait_gone(servers, 10)
    runs = Store(tmp_path / "store").read("runs")
    assert runs.select("status").to_series().to_list() == ["interrupted"]
    assert runs["error"][0].startswith("KeyboardInterrupt")
