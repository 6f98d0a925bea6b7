"""The store lock: one run writes to a store at a time.

`store_lock` holds `fcntl.flock` on `<store>/.lock` while a run's stages read and write; a second run on
the same store logs one line naming the holder and waits for it (it then finds the first run's rows and
skips that work). The lock file holds the holder's description (pid, host, run id, ...) while it is
held and is emptied on release, so a holder that finds a description left over knows the previous run
died without releasing (kill -9, power loss): `StoreLock.stale` is that description. The lock is
re-entrant within a process (the pipeline holds it, its stage flows take it again). flock is advisory
and per host: processes of one run on other machines (Dask workers) write under their parent's lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.store.recovery import recover
from flows.store.store import Store, StoreError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


@dataclass
class StoreLock:
    """A held store lock: its file descriptor, how often it is entered, and the previous holder's
    description when that holder died holding it (else None)."""

    fd: int
    depth: int = 1
    stale: dict | None = None


_HELD: dict[str, StoreLock] = {}
_GUARD = threading.Lock()


@contextmanager
def store_lock(root: str | Path | None, holder: dict | None = None) -> Iterator[StoreLock]:
    """Hold the lock of the store at `root` (waiting for another run that holds it); `holder` describes
    this run in the lock file (e.g. run_id). The first holder in a process removes dead writers'
    leftovers (flows/store/recovery.py). StoreError when the store cannot be locked (read-only)."""
    path = Store(root).root  # None: the default store
    key = str(path.resolve())
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
    if held is not None:
        try:
            yield held
        finally:
            held.depth -= 1
        return
    held = _acquire(path, holder or {})
    _HELD[key] = held
    try:
        recover(Store(path))
        yield held
    finally:
        with _GUARD:
            held.depth -= 1
            done = held.depth == 0
            if done:
                del _HELD[key]
        if done:
            _release(held.fd)


def _acquire(root: Path, holder: dict) -> StoreLock:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StoreError(f"store {root} is not writable ({exc.strerror or exc}); choose another --store or fix "
                         "its permissions") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = _read(fd) or {}
        log.warning("store %s is in use by %s; waiting for it to finish", root, _describe(other))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
    stale = _read(fd)
    me = {"pid": os.getpid(), "host": socket.gethostname(), **holder}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    return StoreLock(fd, stale=stale or None)


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # an empty lock file: this holder ended cleanly
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(fd: int) -> dict | None:
    raw = os.pread(fd, 1 << 20, 0)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:80].decode(errors="replace")}


def _describe(holder: dict) -> str:
    what = holder.get("run_id") or holder.get("flow") or "another run"
    return f"{what} (pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
