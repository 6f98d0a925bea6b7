"""Corpus loading and tokenisation into fixed-length contexts of content token ids.

`load_texts` turns a corpus source (the embedded CPython docs, a text/JSONL/Parquet file or an HF
dataset name) into a list of documents; `tokenize_contexts` concatenates the documents' content token ids
(no special tokens: the activation source adds those itself) and cuts them into `ctx_len` windows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sae.hashing import update_framed

logger = logging.getLogger(__name__)

FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")


def load_texts(
    source: str | Path | None,
    text_field: str = "text",
    split: str = "train",
    max_texts: int | None = None,
) -> list[str]:
    """Load a corpus as a list of non-empty documents, in a deterministic order.

    source: None -> the English docs shipped with CPython (`pydoc_data.topics.topics`, sorted by topic);
    a `.txt` file (one document per blank-line separated paragraph); a `.jsonl` file (field `text_field`
    of each line); a `.parquet` file (column `text_field`); anything else is taken as a Hugging Face
    dataset name (loaded with `datasets`, split `split`, only if that package is installed).
    """
    if source is None:
        texts = _pydoc_topics()
    else:
        texts = _load_source(str(source), text_field, split)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"corpus {source!r} contains no non-empty text")
    if max_texts is not None:
        texts = texts[:max_texts]
    logger.info("loaded %d texts (%d characters) from %s", len(texts), sum(map(len, texts)),
                source or "pydoc_data.topics")
    return texts


def _load_source(source: str, text_field: str, split: str) -> list[str]:
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise ValueError(f"corpus file not found: {path}")
        if suffix == ".txt":
            return _read_paragraphs(path)
        if suffix == ".jsonl":
            return _read_jsonl(path, text_field)
        if suffix == ".parquet":
            return _read_parquet(path, text_field)
        raise ValueError(f"unsupported corpus file type {suffix!r} for {path} (use .txt, .jsonl or .parquet)")
    return _read_hf_dataset(source, text_field, split)


def _pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _read_paragraphs(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    texts = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
            texts.append(_text_of(row, text_field, f"{path}:{line_no}"))
    return texts


def _text_of(row: Any, text_field: str, where: str) -> str:
    if not isinstance(row, dict) or text_field not in row:
        raise ValueError(f"{where}: no field {text_field!r} (pass the right text field)")
    value = row[text_field]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {text_field!r} is {type(value).__name__}, not a string")
    return value


def _read_parquet(path: Path, text_field: str) -> list[str]:
    import polars as pl

    schema = pl.read_parquet_schema(path)
    if text_field not in schema:
        raise ValueError(f"{path}: no column {text_field!r} (columns: {', '.join(schema)})")
    if schema[text_field] not in (pl.String, pl.Utf8):
        raise ValueError(f"{path}: column {text_field!r} has type {schema[text_field]}, not string")
    column = pl.read_parquet(path, columns=[text_field])[text_field]
    return [t for t in column.to_list() if t is not None]


def _read_hf_dataset(name: str, text_field: str, split: str) -> list[str]:
    if importlib.util.find_spec("datasets") is None:
        raise ValueError(
            f"corpus {name!r} is not a file; loading it as a Hugging Face dataset needs the `datasets` "
            "package (pip install datasets)"
        )
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - hub/network/config errors all mean "cannot use this corpus"
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot load dataset {name!r} (split {split!r}): {first_line}") from None
    if text_field not in dataset.column_names:
        raise ValueError(f"dataset {name!r}: no column {text_field!r} (columns: {dataset.column_names})")
    return [t for t in dataset[text_field] if isinstance(t, str)]


def corpus_fingerprint(texts: Sequence[str]) -> str:
    """sha256 hex digest of the texts in order, each UTF-8 encoded and length-prefixed.

    The framing keeps document boundaries: ["ab", "c"] and ["a", "bc"] differ, as do [] and [""].
    """
    digest = hashlib.sha256()
    digest.update(len(texts).to_bytes(8, "big"))
    for text in texts:
        update_framed(digest, text.encode("utf-8"))
    return digest.hexdigest()


def tokenize_contexts(
    texts: Sequence[str],
    tokenizer: Any,
    ctx_len: int = 64,
    max_contexts: int | None = None,
    min_last_len: int | None = None,
) -> list[list[int]]:
    """Concatenate the texts' content token ids and cut them into windows of `ctx_len` ids.

    No special tokens are added ([CLS]/[SEP]/BOS are the activation source's job). The last window is
    kept only when it has at least `min_last_len` ids (default `ctx_len // 4`). Deterministic.
    Returns at most `max_contexts` windows (list[list[int]], each of length <= ctx_len).
    """
    if ctx_len < 1:
        raise ValueError(f"ctx_len must be >= 1, got {ctx_len}")
    min_last = max(1, ctx_len // 4) if min_last_len is None else min_last_len
    contexts: list[list[int]] = []
    buffer: list[int] = []
    for ids in _content_ids(texts, tokenizer):
        buffer.extend(ids)
        n_full = len(buffer) // ctx_len
        contexts.extend(buffer[i * ctx_len : (i + 1) * ctx_len] for i in range(n_full))
        buffer = buffer[n_full * ctx_len :]
        if max_contexts is not None and len(contexts) >= max_contexts:
            return contexts[:max_contexts]
    if buffer and len(buffer) >= min_last:
        contexts.append(buffer)
    logger.info("tokenized %d texts into %d contexts of <= %d tokens", len(texts), len(contexts), ctx_len)
    return contexts


def _content_ids(texts: Sequence[str], tokenizer: Any, chunk: int = 256) -> Iterable[list[int]]:
    """Yield the content token ids of each text, tokenising `chunk` texts per tokenizer call."""
    for start in range(0, len(texts), chunk):
        batch = list(texts[start : start + chunk])
        # verbose=False: whole documents are longer than the model's max length; we chunk them ourselves.
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        yield from encoded
