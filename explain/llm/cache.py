"""Content-addressed cache of LLM responses, so a rerun or a resume pays nothing.

The key is the sha256 of the *logical* request (model, messages, sampling params, requested output
schema, whether logprobs were wanted), not of how it was sent (the JSON mode actually used after
fallback), so a rerun hits the cache whatever the server's capabilities turned out to be. Only replies
that parsed and validated are stored, so a retried bad reply is never replayed. Entries hold the reply
text, token usage and logprobs: never the API key or any header.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol


def file_mode() -> int:
    """0666 minus the process umask: the mode `open()` gives a new file. Read from /proc (Linux) because
    the portable way, os.umask(), briefly changes the umask of every thread."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def request_hash(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """sha256 hex digest of a canonical JSON encoding of (model, messages, params)."""
    payload = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache(Protocol):
    """Where replies are kept between runs; keys are `request_hash` digests."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, entry: dict[str, Any]) -> None: ...


class MemoryResponseCache:
    """In-process cache (tests, benchmarks); lost at exit."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(key)
        return dict(entry) if entry is not None else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = dict(entry)

    def __len__(self) -> int:
        return len(self._entries)


class DirectoryResponseCache:
    """One JSON file per reply under a caller-given directory: `<root>/<key[:2]>/<key>.json`.

    Writes go to a temporary file in the same directory and are renamed into place, so a crash never
    leaves a half-written entry and concurrent writers of the same key are harmless (same content).
    A corrupt or unreadable entry is treated as a miss.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a request hash: {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            with path.open("r", encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, json.JSONDecodeError):
            return None
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600; entries get the mode any new file gets
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0
