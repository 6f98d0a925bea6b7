"""Secrets and file modes of a whole LLM run (tests/reliability/fault_run.py): the API key set in the
environment reaches the server and nothing else (every store file, raw and decoded Parquet, the reports,
the console, Prefect's database); every file the run writes gets the mode of the user's umask."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from fault_run import RUN_UMASK, SECRET, fault_run_fixture  # noqa: F401

from explain.llm.cache import file_mode

pytestmark = pytest.mark.integration
NEEDLES = (SECRET, SECRET[-12:])
"""The key, and its tail (what a masking library would leave: sk-lat***e77b2)."""


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_the_key_was_used(fault_run):
    assert fault_run.done.returncode == 0, fault_run.done.stderr[-2000:]
    assert f"Bearer {SECRET}" in fault_run.server.state.auth_headers  # else the search below proves nothing


def test_the_key_is_in_no_file_byte(fault_run):
    files = _files(fault_run.store, fault_run.prefect_home)
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".html" for p in files)
    assert any(p.name.endswith(".db") for p in files)  # the run's own Prefect server database
    leaks = [p for p in files for needle in NEEDLES if needle.encode() in p.read_bytes()]
    assert leaks == []


def test_the_key_is_in_no_decoded_table_cell(fault_run):
    """Parquet pages are compressed: a key in a cell would not show as plain bytes, so decode every part."""
    for part in _files(fault_run.store):
        if part.suffix != ".parquet":
            continue
        text = pl.read_parquet(part).write_ndjson()
        assert not any(needle in text for needle in NEEDLES), part


def test_the_key_is_not_on_the_console(fault_run):
    out = fault_run.done.stdout + fault_run.done.stderr
    assert out.strip()  # the run did log
    assert not any(needle in out for needle in NEEDLES)


def test_files_get_the_users_umask(fault_run):
    """Files the run created (new inodes, replaced ones included): 0666 & ~umask (0640 under umask 027);
    its new folders 0777 & ~umask. Files it did not create (tiny_run's, written in this process, or
    rewritten in place, which keeps a mode): this process's umask, the SAE weights included (safetensors
    itself writes 0600)."""
    files = _files(fault_run.store)
    written = [p for p in files if fault_run.before.get(p) != p.stat().st_ino]
    kept = [p for p in files if p not in written]
    assert written and any(p.name == "sae_weights.safetensors" for p in kept)
    assert {str(p): oct(_mode(p)) for p in written if _mode(p) != 0o666 & ~RUN_UMASK} == {}
    assert {str(p): oct(_mode(p)) for p in kept if _mode(p) != file_mode()} == {}
    folders = [p for p in fault_run.store.rglob("*") if p.is_dir() and p not in fault_run.before_dirs]
    assert folders
    assert {str(p): oct(_mode(p)) for p in folders if _mode(p) != 0o777 & ~RUN_UMASK} == {}


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
