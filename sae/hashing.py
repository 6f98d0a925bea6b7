"""Content hashing shared by the SAE, subject-model and corpus fingerprints.

Every piece fed to the hash is length-prefixed (`update_framed`), so the boundaries between pieces are
part of the digest: ["ab", "c"] and ["a", "bc"] hash differently, and so do two files whose contents
concatenate to the same bytes. Files are streamed in chunks (weights can be GBs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1 << 20
Buffer = Any
"""bytes, memoryview, a numpy array: anything with the (C-contiguous) buffer protocol."""


def update_framed(digest: hashlib._Hash, data: Buffer) -> None:
    """Feed `data` (bytes or any C-contiguous buffer, e.g. a numpy array) preceded by its byte length
    (8 bytes, big-endian), so concatenations stay distinct. Buffers are hashed in place, not copied."""
    view = memoryview(data).cast("B")
    digest.update(view.nbytes.to_bytes(8, "big"))
    digest.update(view)


def update_file(digest: hashlib._Hash, file: Path, label: str) -> None:
    """Feed `label` (e.g. the file's name, never its directory) and the file's bytes, streamed."""
    update_framed(digest, label.encode())
    digest.update(file.stat().st_size.to_bytes(8, "big"))
    with file.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)


def hash_files(files: Iterable[tuple[str, Path]], kind: str) -> str:
    """sha256 hex digest over (label, file) pairs in the given order, tagged with `kind`."""
    digest = hashlib.sha256()
    update_framed(digest, kind.encode())
    for label, file in files:
        update_file(digest, file, label)
    return digest.hexdigest()
