"""Run the `latent-atlas run` CLI as a user would (its own process group, its own temporary Prefect
server), watch its log for stage boundaries, kill it, and compare stores as sets of rows."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl

from flows.store import TABLES, Store
from flows.store.schemas import table_schema

STAGES = ("prepare-data", "sae", "sae-metrics", "latent-cache", "sample-examples", "explain", "score", "report")
"""The pipeline's stages in order, as its log names them ("stage <name> done in <s> s"); a run logs the
ones it has (CliRun.stage_times, in order)."""

VOLATILE = ("run_id", "created_at", "started_at", "finished_at", "eval_s")
"""Columns that differ between two runs of the same thing (as in tests/flows/test_kill.py; `eval_s`: how
long the SAE evaluation took)."""

COMPARED = tuple(t for t in TABLES if t not in ("runs", "llm_calls"))
"""Tables whose rows an interrupted-then-resumed run must reproduce (the run log and the LLM call log
differ by design: the rerun's calls are cache hits)."""

_DONE = re.compile(r"stage (\S+) done in ([0-9.]+) s")


CLI = Path(sys.executable).with_name("latent-atlas")
"""The installed command, what users run. Not `python -m flows.cli.main`: under `-m`, CPython ends the
process by SIGINT (returncode -2; a shell shows 130 for both) instead of with main's `exit(130)` when its
interpreter-wide "unhandled Ctrl-C" flag was set on the way, even by a KeyboardInterrupt that was then
handled (seen in 1 of ~20 Ctrl-C runs); a script's SystemExit exits with its code whatever that flag says."""


def run_argv(store: Path, base_url: str, train_tokens: int = 60_000, max_latents: int = 16) -> list[str]:
    """A small LLM run: every stage takes long enough to be hit, explain and score go chunk by chunk."""
    return [str(CLI), "run", "--store", str(store), "--max-contexts", "160",
            "--layer", "2", "--n-latents", "512", "--k", "16", "--dead-tokens", "20000",
            "--train-tokens", str(train_tokens), "--train-batch-size", "1024", "--max-latents", str(max_latents),
            "--explainer", "llm", "--llm-model", "fake",
            "--llm-base-url", base_url, "--llm-max-concurrency", "1", "--chunk-latents", "4"]


def run_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(home)  # its own temporary server, as a user's run has
    return env


class CliRun:
    """One CLI run in its own session, its output lines recorded with the time they arrived."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        # SIGINT back to default: a child of a non-interactive shell may inherit it ignored.
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, pattern: str, timeout: float = 600) -> float | None:
        """When a line matching `pattern` arrived (monotonic time); None if the run ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if re.search(pattern, line):
                    return at
            if self.proc.poll() is not None:
                self._reader.join(5)
                return next((at for at, line in self.lines if re.search(pattern, line)), None)
            time.sleep(0.05)
        return None

    def finish(self, timeout: float = 900) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stage_times(self) -> dict[str, float]:
        """Seconds per finished stage, in the order they finished."""
        return {m[1]: float(m[2]) for _, line in self.lines if (m := _DONE.search(line))}


def guarded_servers(parent: int) -> list[int]:
    """Pids of temporary Prefect servers started by process `parent` (flows/prefect_env.py's watchdog)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"run_guarded" in a for a in argv) and str(parent).encode() in argv:
            found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and _running(pid) for pid in pids):
            return True
        time.sleep(0.2)
    return False


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def tables(store: Store) -> dict[str, pl.DataFrame]:
    """Every compared table without its volatile columns, sorted by its key (then every other column)."""
    out = {}
    for table in COMPARED:
        frame = store.read(table)
        if frame.is_empty():
            out[table] = frame
            continue
        frame = frame.drop([c for c in VOLATILE if c in frame.columns])
        key = [c for c in table_schema(table).key if c in frame.columns]
        out[table] = frame.sort(key)
    return out


def duplicate_keys(store: Store) -> dict[str, int]:
    """Rows whose key another row of the same table has, per table (every table but the logs)."""
    out = {}
    for table in COMPARED:
        frame = store.read(table)
        key = [c for c in table_schema(table).key if c in frame.columns]
        out[table] = int(frame.select(key).is_duplicated().sum()) if frame.height else 0
    return out


def sae_digests(store: Store) -> dict[str, str]:
    saes = store.root / "saes"
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(saes.glob("*/sae_weights.safetensors"))} if saes.exists() else {}


def leftover_files(store: Store) -> list[Path]:
    """Temporary files and staging folders left in the store."""
    found = [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]
    staging = store.root / "cache" / "staging"
    return found + (list(staging.iterdir()) if staging.exists() else [])
