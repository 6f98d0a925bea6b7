"""Identity of a subject model's weights and of its tokenizer, as sha256 hex digests.

Used by `SubjectModel.fingerprint` / `.tokenizer_fingerprint` so cached results can be keyed by what the
model *is*, not by the name or path it was loaded under.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sae.hashing import hash_files, update_framed

WEIGHT_SUFFIXES = (".safetensors", ".bin")
CONFIG_FILENAME = "config.json"


def model_fingerprint(model: nn.Module, source_dir: Path | None = None) -> str:
    """sha256 identity of a model's weights, cheapest trustworthy source first.

    source_dir (the local folder it was loaded from): a content hash of config.json and the top-level
    *.safetensors / *.bin files. Else a hub snapshot's `config._commit_hash`: "rev-<hash>". Else a hash
    of the state_dict tensors (name, dtype, shape, bytes) in name order.
    """
    if source_dir is not None:
        return folder_fingerprint(source_dir)
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return f"rev-{commit}"
    return state_dict_fingerprint(model)


def folder_fingerprint(folder: Path) -> str:
    """Content hash of a model folder's config.json and weight files (streamed; names, not paths)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if (folder / CONFIG_FILENAME).is_file():
        files.insert(0, folder / CONFIG_FILENAME)
    if not files:
        raise ValueError(f"{folder} holds no config.json or weight files to fingerprint")
    return hash_files(((p.name, p) for p in files), kind="model-folder")


def state_dict_fingerprint(model: nn.Module) -> str:
    """Hash of every state_dict tensor's name, dtype, shape and raw bytes, in name order."""
    digest = hashlib.sha256()
    update_framed(digest, b"state-dict")
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        update_framed(digest, f"{name}|{tensor.dtype}|{list(tensor.shape)}".encode())
        # Viewed as bytes: numpy has no bfloat16, and the buffer needs no copy.
        update_framed(digest, tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's class name, its sorted vocab (token -> id) and its special tokens."""
    digest = hashlib.sha256()
    update_framed(digest, type(tokenizer).__name__.encode())
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    update_framed(digest, json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    special = {
        "map": getattr(tokenizer, "special_tokens_map", {}),
        "tokens": list(getattr(tokenizer, "all_special_tokens", [])),
        "ids": list(getattr(tokenizer, "all_special_ids", [])),
    }
    # default=str: special-token maps can hold AddedToken objects, not only strings.
    update_framed(digest, json.dumps(special, sort_keys=True, default=str, ensure_ascii=False).encode())
    return digest.hexdigest()
