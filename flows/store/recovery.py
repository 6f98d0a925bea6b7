"""What a dead writer leaves in a store, found and removed by the next run that takes the store lock.

A writer killed mid-write leaves a temporary file (`.<name>.<pid>-<tag>.tmp`, flows/store/store.py; or
a training checkpoint's or an activation file's temporary), a staging folder (an SAE, a latent cache)
or the member parts of a chunk whose commit part never arrived (`simulations` without their `scores`).
Readers already ignore all of these; removing them keeps the store clean and lets the rerun redo the
chunk whole. Only the holder of the store lock (flows/store/lock.py) may call `recover`: every writer
of a store holds it, so nothing else is writing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from flows.store.store import COMMIT_PART, TABLES, Store, is_group_part, part_tag

log = logging.getLogger(__name__)

_OUR_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a zombie or another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_temp(path: Path) -> bool:
    """A temporary file of a writer that is gone: ours with a dead pid, or one in an older format."""
    match = _OUR_TEMP.match(path.name)
    return match is None or not pid_alive(int(match["pid"]))


def leftovers(store: Store) -> list[Path]:
    """Temp files of dead writers, staging folders, and uncommitted chunk parts, under `store`."""
    found = [p for table in TABLES if (d := store.table_dir(table)).exists()
             for p in d.rglob(".*.tmp") if dead_temp(p)]
    for folder in (store.root / "saes", store.root / "checkpoints"):  # SAE staging, training checkpoints
        found += sorted(folder.glob(".*.tmp")) if folder.exists() else []
    for scratch in ("staging", "activations"):
        folder = store.root / "cache" / scratch
        if folder.exists():
            found += sorted(folder.iterdir()) if scratch == "staging" else sorted(folder.glob("*.tmp"))
    for member, commit in COMMIT_PART.items():
        committed, directory = store.group_tags(commit), store.table_dir(member)
        if directory.exists():
            found += [p for p in sorted(directory.rglob("*.parquet")) if is_group_part(p)
                      and part_tag(p) not in committed]
    return found


def recover(store: Store) -> int:
    """Remove every leftover of a dead writer (see `leftovers`); returns how many were removed."""
    removed = 0
    for path in leftovers(store):
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:  # a read-only store: nothing to clean that a reader would see anyway
            log.debug("cannot remove leftover %s: %s", path, exc)
    if removed:
        log.info("store %s: removed %d leftover(s) of an interrupted run", store.root, removed)
    return removed
