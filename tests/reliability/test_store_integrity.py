"""Store integrity: torn chunks, temporary files, damaged parts, failing disks, impossible values."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from frames import rows

from flows.stages.latents import scan_latent_acts
from flows.store import Store
from flows.store.recovery import leftovers, recover
from flows.store.store import StoreError, temp_name


def _chunk(n: int = 3) -> dict[str, pl.DataFrame]:
    return {"simulations": rows("simulations", n), "scores": rows("scores", n)}


def test_a_chunk_killed_between_its_two_renames_is_invisible_and_the_rerun_writes_it_once(tmp_path):
    # A real kill -9 right after the simulations part is renamed into place, before the scores part is.
    child = textwrap.dedent(f"""
        import os, signal
        from flows.store import store as module
        from flows.store import Store
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from frames import rows
        real, calls = os.replace, []
        def replace(src, dst):
            calls.append(dst)
            real(src, dst)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        module.os.replace = replace
        Store({str(tmp_path)!r}).append_together({{"simulations": rows("simulations", 3),
                                                   "scores": rows("scores", 3)}}, part="sid")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    store = Store(tmp_path)
    assert len(list(store.table_dir("simulations").glob("*.parquet"))) == 1  # the torn chunk's member is there
    assert store.parts("simulations") == []  # ... but no reader sees it
    assert len(list(store.table_dir("scores").glob(".*.tmp"))) == 1  # and the scores part never arrived
    assert recover(store) == 2 and leftovers(store) == []
    store.append_together(_chunk(), part="sid")  # the rerun redoes the chunk
    assert store.read("simulations").height == 3 and store.read("scores").height == 3


def test_committed_chunks_read_whole_and_members_need_their_commit_table(tmp_path):
    store = Store(tmp_path)
    store.append_together(_chunk(2), part="a")
    store.append_together({"simulations": rows("simulations", 0), "scores": rows("scores", 1)}, part="b")
    assert store.read("simulations").height == 2 and store.read("scores").height == 3
    with pytest.raises(ValueError, match="do not commit with"):
        store.append_together({"scores": rows("scores", 1), "simulations": rows("simulations", 1)})


def test_temporary_names_are_unique_per_writer_and_name_its_pid():
    a, b = temp_name("part-x.parquet"), temp_name("part-x.parquet")
    assert a != b and a.startswith(".part-x.parquet.") and f".{os.getpid()}-" in a and a.endswith(".tmp")


def test_recovery_removes_dead_writers_temp_files_and_keeps_live_ones(tmp_path):
    store = Store(tmp_path)
    store.append("scores", rows("scores", 1))
    directory = store.table_dir("scores")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = directory / f".p.parquet.{int(dead.stdout)}-0123abcd.tmp"
    live_tmp = directory / temp_name("p.parquet")  # this process: alive
    legacy_tmp = directory / ".p.parquet.tmp"  # the format before writers were named
    staging = tmp_path / "cache" / "staging" / "latent_acts-x"
    for path in (dead_tmp, live_tmp, legacy_tmp):
        path.write_bytes(b"")
    staging.mkdir(parents=True)
    assert set(leftovers(store)) == {dead_tmp, legacy_tmp, staging}
    recover(store)
    assert live_tmp.exists() and not dead_tmp.exists() and not legacy_tmp.exists() and not staging.exists()
    assert store.read("scores").height == 1


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_leaves_no_temp_part_and_says_one_line(tmp_path, monkeypatch, code):
    store = Store(tmp_path)
    store.append("scores", rows("scores", 1))
    real = pl.DataFrame.write_parquet

    def half_written(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1")  # the disk filled up after a few bytes (or a zero-byte file)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_written)
    with pytest.raises(StoreError) as info:
        store.append("scores", rows("scores", 2))
    assert os.strerror(code) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StoreError):
        store.append_together(_chunk())
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real)
    assert [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []
    assert store.read("scores").height == 1 and store.parts("simulations") == []


def test_a_rename_failing_mid_chunk_removes_the_members_already_in_place(tmp_path, monkeypatch):
    from flows.store import store as module

    real, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(module.os, "replace", second_fails)
    with pytest.raises(StoreError, match="I/O error"):
        Store(tmp_path).append_together(_chunk())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_truncated_part_is_named_in_one_line(tmp_path):
    store = Store(tmp_path)
    good = store.append("scores", rows("scores", 4))
    bad = store.append("scores", rows("scores", 4))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    for read in (store.read, store.scan):
        with pytest.raises(StoreError) as info:
            read("scores")
        assert str(bad) in str(info.value) and str(good) not in str(info.value) and "\n" not in str(info.value)


def test_a_truncated_latent_cache_part_is_noticed(tmp_path):
    store = Store(tmp_path)
    cache = store.table_dir("latent_acts") / "sae-x"
    cache.mkdir(parents=True)
    frame = pl.DataFrame({"ctx_id": [1, 2], "pos": [0, 1], "latent": [3, 4], "value": [0.5, 1.5], "sae_id": "sae-x"})
    for i in range(2):
        frame.write_parquet(cache / f"part-{i:06d}.parquet")
    assert scan_latent_acts(store, "sae-x").collect().height == 4
    part = cache / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:-9])
    with pytest.raises(StoreError, match=f"{part}.*delete the folder {cache}"):
        scan_latent_acts(store, "sae-x")


@pytest.mark.parametrize(("table", "column", "value"), [
    ("scores", "auroc", 8.85e230), ("scores", "precision", -0.1), ("scores", "recall", float("inf")),
    ("scores", "correlation", 1.5), ("explanations", "cost_usd", float("nan")), ("llm_calls", "latency_s", -1.0),
])
def test_impossible_values_are_refused_when_written(tmp_path, table, column, value):
    store = Store(tmp_path)
    with pytest.raises(ValueError, match=f"column '{column}'"):
        store.append(table, rows(table, 3).with_columns(pl.Series(column, [0.5, value, 0.5])))
    assert not store.has(table)


def test_nan_where_the_schema_allows_it_is_written(tmp_path):
    store = Store(tmp_path)  # a yes/no judge has no AUROC: NaN means "not computed"
    store.append("scores", rows("scores", 2).with_columns(pl.lit(float("nan")).alias("auroc")))
    assert store.read("scores")["auroc"].is_nan().all()


def test_recording_a_failure_on_a_failing_store_keeps_the_original_error(tmp_path, monkeypatch):
    from datetime import UTC, datetime

    from flows import pipeline as module
    from flows.config import RunConfig

    def broken(self, *args, **kwargs):
        raise StoreError("cannot write to store: No space left on device")

    def failing_stage(cfg):
        raise RuntimeError("the original error")

    monkeypatch.setattr(Store, "append", broken)
    monkeypatch.setattr(module, "prepare_data_flow", failing_stage)
    warnings: list[str] = []
    monkeypatch.setattr(module.log, "warning", lambda msg, *args: warnings.append(msg % args))
    cfg = RunConfig(store=str(tmp_path))
    with pytest.raises(RuntimeError, match="the original error"):
        module._locked_pipeline(cfg, "run-x", datetime.now(UTC), lambda name, fn, *args: fn(*args))
    assert len(warnings) == 1 and "could not record failed run run-x" in warnings[0] and "No space" in warnings[0]


@pytest.mark.parametrize(("explainer", "retried"), [("llm", True), ("n2g", False)])
def test_a_rerun_retries_failed_llm_explanations_and_the_new_row_supersedes_the_old(tmp_path, explainer, retried):
    from datetime import UTC, datetime, timedelta

    from flows.config import RunConfig
    from flows.stages.explain import explainer_key, make_explainer, pending_latents
    from flows.store.ids import stats_key
    from flows.store.rows import latest_explanations

    cfg = RunConfig(store=str(tmp_path), explainer=explainer, llm={"model": "fake"})
    store, made = Store(tmp_path), make_explainer(cfg, None)
    key, name = explainer_key(cfg, made), made.name
    store.append("latent_stats", rows("latent_stats", 3, sae_id="sae", stats_key=stats_key(cfg), status="ok"))
    t0 = datetime.now(UTC)

    def attempt(status: str, at: datetime) -> pl.DataFrame:
        return rows("explanations", 3, sae_id="sae", explain_key=key, explainer=name, status=status, created_at=at)

    store.append("explanations", attempt("ok", t0).filter(pl.col("latent") != 1).vstack(
        attempt("failed", t0).filter(pl.col("latent") == 1)))
    assert pending_latents(store, cfg, "sae", made) == ([1] if retried else [])
    store.append("explanations", attempt("ok", t0 + timedelta(seconds=1)).filter(pl.col("latent") == 1))
    latest = latest_explanations(store, "sae", name, key)
    assert latest["latent"].to_list() == [0, 1, 2] and set(latest["status"]) == {"ok"}  # one row per key
    assert pending_latents(store, cfg, "sae", made) == []
