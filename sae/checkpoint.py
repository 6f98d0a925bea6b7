"""Resumable training checkpoints: SAE weights, Adam and schedule state, dead counters, data position.

Written to a temporary file beside the target and renamed into place (atomic on POSIX), so a kill -9
mid-write leaves the previous checkpoint intact. The trainer removes it once the SAE is saved elsewhere.
A checkpoint records the run's config hash: one from other settings is ignored, never resumed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write `state` (tensors, state dicts, numbers) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | None, config_hash: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it exists and was written by a run with `config_hash`, else None."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:  # a torn or foreign file: start afresh
        logger.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if state.get("config_hash") != config_hash:
        logger.warning("ignoring checkpoint %s: written with other settings", path)
        return None
    logger.info("resuming training from %s (step %d, %d tokens)", path, state["step"], state["tokens_seen"])
    return state


def remove_checkpoint(path: Path | None) -> None:
    """Delete the checkpoint (after the SAE it leads to was saved)."""
    if path is not None:
        path.unlink(missing_ok=True)
