"""Activation files: cache activations once, train many SAEs from them.

An activation file holds a float matrix [tokens, d_in]. We write `.npy`; we read `.npy` and
`.safetensors` memory-mapped (pages are read from disk on demand, never the whole file at once) and
Parquet (one list/array column, or d_in numeric columns; Parquet cannot be memory-mapped, so it is
read into RAM). `shuffled_batches` streams random token batches from such a matrix, epoch after epoch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# safetensors dtype names -> numpy dtypes (the float types an activation matrix can have; bf16 has no
# numpy dtype and is rejected with a clear message).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def save_activations(path: str | Path, activations: Tensor | np.ndarray | Iterable[Tensor | np.ndarray]) -> Path:
    """Write activations [tokens, d_in] (one matrix, or an iterable of [n_i, d_in] chunks) to `.npy`.

    Chunks are streamed to disk, so the whole matrix never needs to fit in RAM. Stored as float32.
    Written to a temporary name and renamed, so a crash never leaves a truncated file behind.
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"activations are saved as .npy; got {path.name}")
    chunks = [activations] if isinstance(activations, Tensor | np.ndarray) else activations
    raw = path.with_name(path.name + ".raw.tmp")
    n_rows, d_in = _write_raw(raw, chunks)
    final_tmp = path.with_name(path.name + ".tmp")
    try:
        with final_tmp.open("wb") as out:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                      "fortran_order": False, "shape": (n_rows, d_in)}
            np.lib.format.write_array_header_1_0(out, header)
            with raw.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
        os.replace(final_tmp, path)
    finally:
        raw.unlink(missing_ok=True)
        final_tmp.unlink(missing_ok=True)
    logger.info("saved activations [%d, %d] to %s", n_rows, d_in, path)
    return path


def _write_raw(raw: Path, chunks: Iterable[Tensor | np.ndarray]) -> tuple[int, int]:
    """Append float32 rows of each [n_i, d] chunk to `raw`; returns (rows, d)."""
    n_rows, d_in = 0, None
    with raw.open("wb") as out:
        for chunk in chunks:
            array = chunk.detach().cpu().numpy() if isinstance(chunk, Tensor) else np.asarray(chunk)
            if array.ndim != 2 or (d_in is not None and array.shape[1] != d_in):
                raw.unlink(missing_ok=True)
                raise ValueError(f"activation chunk has shape {array.shape}, expected [n, {d_in or 'd_in'}]")
            d_in = array.shape[1]
            out.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
            n_rows += array.shape[0]
    if d_in is None:
        raw.unlink(missing_ok=True)
        raise ValueError("no activations to save")
    return n_rows, d_in


def open_activations(path: str | Path, name: str | None = None) -> np.ndarray:
    """Open an activation matrix [tokens, d_in]: .npy / .safetensors memory-mapped, Parquet in RAM.

    name: the tensor (safetensors) or column (Parquet) to read when the file holds several; Parquet
    without a name uses its only list column, or else all its numeric columns as d_in columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"activation file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r")
    elif suffix == ".safetensors":
        array = _memmap_safetensors(path, name)
    elif suffix == ".parquet":
        array = _read_parquet(path, name)
    else:
        raise ValueError(f"unsupported activation file {path.name} (use .npy, .safetensors or .parquet)")
    return _check_matrix(array, path)


def _check_matrix(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 2:
        raise ValueError(f"{path}: activations must have shape [tokens, d_in], got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: activations must be floats, got {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path}: empty activation matrix {list(array.shape)}")
    return array


def _memmap_safetensors(path: Path, name: str | None) -> np.ndarray:
    """Memory-map one tensor of a .safetensors file (8-byte header size, JSON header, raw data)."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if name is None:
        if len(tensors) != 1:
            raise ValueError(f"{path}: holds tensors {sorted(tensors)}; say which one to use")
        name = next(iter(tensors))
    if name not in tensors:
        raise ValueError(f"{path}: no tensor {name!r} (has {sorted(tensors)})")
    info = tensors[name]
    if info["dtype"] not in _SAFETENSORS_DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}; use F32, F16 or F64")
    start, end = info["data_offsets"]
    if end == start:
        return np.zeros(info["shape"], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
    return np.memmap(path, dtype=_SAFETENSORS_DTYPES[info["dtype"]], mode="r",
                     offset=8 + header_len + start, shape=tuple(info["shape"]))


def _read_parquet(path: Path, name: str | None) -> np.ndarray:
    import polars as pl

    schema = pl.read_parquet_schema(path)
    if name is not None and name not in schema:
        raise ValueError(f"{path}: no column {name!r} (columns: {', '.join(schema)})")
    list_columns = [c for c, t in schema.items() if isinstance(t, pl.List | pl.Array)]
    if name is None and len(list_columns) == 1:
        name = list_columns[0]
    if name is not None:
        column = pl.read_parquet(path, columns=[name])[name]
        if not isinstance(column.dtype, pl.List | pl.Array):
            raise ValueError(f"{path}: column {name!r} is {column.dtype}, not a list of floats")
        lengths = column.list.len() if isinstance(column.dtype, pl.List) else None
        if lengths is not None and lengths.n_unique() > 1:
            raise ValueError(f"{path}: rows of column {name!r} have different lengths {sorted(lengths.unique())[:5]}")
        return np.asarray(column.to_list(), dtype=np.float32)
    numeric = [c for c, t in schema.items() if t.is_numeric()]
    if not numeric or len(numeric) != len(schema):
        raise ValueError(f"{path}: expected one list column or only numeric columns, got {dict(schema)}")
    return pl.read_parquet(path).to_numpy().astype(np.float32, copy=False)


def shuffled_batches(
    array: np.ndarray | str | Path,
    batch_size: int,
    n_tokens: int | None = None,
    seed: int = 0,
    start: int = 0,
) -> Iterator[Tensor]:
    """Random token batches FloatTensor [batch_size, d_in] from an activation matrix [tokens, d_in].

    Loops over epochs, each a fresh seeded permutation of the rows, until `n_tokens` rows were yielded
    (default: one epoch); batches run across epoch ends, so only the very last one may be smaller.
    Reads only each batch's rows (a memmap stays on disk); the permutation costs 8 bytes per token.
    start: skip the stream's first `start` tokens (a whole number of batches) without reading them, so a
    resumed training run sees exactly the batches an uninterrupted one would.
    """
    if not isinstance(array, np.ndarray):
        array = open_activations(array)
    array = _check_matrix(array, Path("<array>"))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = len(array) if n_tokens is None else n_tokens
    for i, batch_rows in enumerate(_batch_rows(len(array), batch_size, total, seed)):
        if i * batch_size < start:
            continue
        # Sorted row ids read the memmap front to back; the order inside a batch does not matter.
        yield torch.from_numpy(np.asarray(array[np.sort(batch_rows)], dtype=np.float32))


def _batch_rows(n_rows: int, batch_size: int, total: int, seed: int) -> Iterator[np.ndarray]:
    """Row ids of each batch, `total` in all: one seeded permutation of range(n_rows) per epoch."""
    rng = np.random.default_rng(seed)
    order, position = rng.permutation(n_rows), 0
    for start in range(0, total, batch_size):
        need, parts = min(batch_size, total - start), []
        while need:
            if position == n_rows:
                order, position = rng.permutation(n_rows), 0
            part = order[position : position + need]
            parts.append(part)
            position += len(part)
            need -= len(part)
        yield np.concatenate(parts)


def first_nonfinite_row(array: np.ndarray, chunk_rows: int = 65_536) -> int | None:
    """Index of the first row of array [tokens, d_in] holding NaN or inf, None when all are finite (chunked)."""
    for start in range(0, len(array), chunk_rows):
        bad = ~np.isfinite(np.asarray(array[start : start + chunk_rows])).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def check_finite(array: np.ndarray, path: str | Path = "<array>") -> None:
    """ValueError naming the first row of an activation matrix with NaN/inf (training would diverge on it)."""
    row = first_nonfinite_row(array)
    if row is not None:
        raise ValueError(f"{path}: row {row} of the activations holds NaN or inf; training stopped")
