"""Concurrency: one writer per store at a time (the store lock), unique temporary names, summaries that
count a key once however often it was written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from crash import CliRun, duplicate_keys, leftover_files, run_env
from frames import rows

from flows.store import Store
from flows.store.lock import LOCK_FILE, store_lock


def _holder(root, seconds: float) -> subprocess.Popen:
    """A process that holds the store lock of `root` for `seconds`, printing "held" once it has it."""
    code = textwrap.dedent(f"""
        import time
        from flows.store.lock import store_lock
        with store_lock({str(root)!r}, {{"run_id": "run-holder"}}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_waits_for_the_first_and_says_so(tmp_path, monkeypatch):
    from flows.store import lock as module

    warnings: list[str] = []
    monkeypatch.setattr(module.log, "warning", lambda msg, *args: warnings.append(msg % args))
    holder = _holder(tmp_path, 2.0)
    start = time.monotonic()
    with store_lock(tmp_path) as lock:
        waited = time.monotonic() - start
        assert lock.stale is None  # the first one had released it (cleanly)
    holder.wait()
    assert waited > 1.5
    assert len(warnings) == 1 and "in use by run-holder (pid" in warnings[0] and "waiting" in warnings[0]


def test_the_lock_is_reentrant_and_empty_once_released(tmp_path):
    with store_lock(tmp_path, {"run_id": "run-a"}) as outer:
        with store_lock(tmp_path) as inner:  # a stage flow inside the pipeline takes it again
            assert inner is outer and inner.depth == 2
        assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == "run-a"
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_a_holder_killed_with_the_lock_is_reported_as_stale_and_recorded_as_killed(tmp_path):
    from flows.config import RunConfig
    from flows.pipeline import record_killed_run

    cfg = RunConfig(store=str(tmp_path))
    holder = {"run_id": "run-dead", "flow": "pipeline", "config": cfg.model_dump_json(),
              "started_at": "2026-01-01T00:00:00+00:00"}
    code = textwrap.dedent(f"""
        import os, signal
        from flows.store.lock import store_lock
        with store_lock({str(tmp_path)!r}, {holder!r}):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode < 0
    with store_lock(tmp_path) as lock:
        assert lock.stale["run_id"] == "run-dead"
        record_killed_run(Store(tmp_path), lock)
    runs = Store(tmp_path).read("runs")
    assert runs.select("run_id", "status").rows() == [("run-dead", "killed")]
    assert runs["finished_at"].is_null().all() and "ended without recording" in runs["error"][0]
    with store_lock(tmp_path) as lock:  # released cleanly this time: nothing stale
        assert lock.stale is None


def test_parallel_appends_never_share_a_temporary_file(tmp_path):
    store = Store(tmp_path)

    def writer(i: int) -> None:
        for _ in range(10):
            store.append("scores", rows("scores", 5), part="same-prefix")
            store.append_together({"simulations": rows("simulations", 2), "scores": rows("scores", 1)}, part="x")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.read("scores").height == 6 * 10 * 6 and store.read("simulations").height == 6 * 10 * 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_run_summary_counts_a_key_scored_by_two_runs_once(tmp_path):
    from flows.reports.summary import score_summary

    store = Store(tmp_path)
    now = datetime.now(UTC)
    for i, run in enumerate(("run-old", "run-new")):
        store.append("runs", rows("runs", 1, run_id=run, status="ok", started_at=now + timedelta(seconds=i)))
        store.append("scores", rows("scores", 4, sae_id="sae", score_key="k", explainer="llm", scorer="simulation",
                                    population="sampled", estimator="sample", run_id=run, f1=0.25 * (i + 1)))
    summary = score_summary(store, "sae", ["k"])
    assert summary["latents"].to_list() == [4]  # not 8
    assert summary["f1"].to_list() == [0.5]  # the newest run's rows
    assert pl.read_parquet(store.parts("scores")).height == 8  # both runs' rows are kept


@pytest.mark.slow
@pytest.mark.integration
def test_two_identical_runs_started_two_seconds_apart_both_finish_with_nothing_written_twice(tmp_path):
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "flows.cli.main", "run", "--store", str(store), "--max-contexts", "160",
            "--layer", "2", "--n-latents", "512", "--k", "16", "--dead-tokens", "20000", "--train-tokens", "40000",
            "--train-batch-size", "1024", "--max-latents", "24"]
    first = CliRun(argv, run_env(tmp_path / "prefect-1"))
    time.sleep(2)
    second = CliRun(argv, run_env(tmp_path / "prefect-2"))
    assert first.finish() == 0, first.output[-3000:]
    assert second.finish() == 0, second.output[-3000:]
    assert "is in use by run-" in second.output and "waiting for it to finish" in second.output
    assert duplicate_keys(Store(store)) == dict.fromkeys(duplicate_keys(Store(store)), 0)
    assert leftover_files(Store(store)) == []
    runs = Store(store).read("runs")
    assert runs["status"].to_list() == ["ok", "ok"]
