"""Downstream loss of an SAE in an encoder (sentence-embedding) model: splice the reconstruction in.

The output of block `layer` is replaced by `reconstruct(output)` at the content positions (those the SAE
was trained on; special tokens and padding stay), the rest of the model runs, and the sentence embedding
is pooled the model's own way (`pooling`: sentence-transformers' 1_Pooling config, mean by default).
Reported: the mean cosine between clean and spliced embeddings, the same with those positions
zero-ablated, and the fraction recovered, (cos_spliced - cos_zero) / (1 - cos_zero). An identity
reconstruction gives cosine 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae.data.subject import find_blocks
from sae.splice import Reconstruct, edited_output


def pooling_mode(model_dir: Path | None) -> str:
    """"mean" or "cls" from a sentence-transformers folder's 1_Pooling/config.json (default "mean")."""
    config = model_dir / "1_Pooling" / "config.json" if model_dir is not None else None
    if config is not None and config.exists() and json.loads(config.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def pool(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Sentence embeddings [B, d] from hidden [B, T, d] and attention_mask [B, T]."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


def _embed(model: nn.Module, ids: Tensor, mask: Tensor, mode: str, block: nn.Module | None = None,
           edit: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Pooled sentence embeddings [B, d] of ids [B, T], with block's output edited when edit is given."""
    with edited_output(block, edit), torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return pool(hidden.float(), mask, mode)


def _splice(reconstruct: Reconstruct, positions: Tensor) -> Callable[[Tensor], Tensor]:
    def apply(hidden: Tensor) -> Tensor:
        out = hidden.clone()
        out[positions] = reconstruct(hidden[positions]).to(hidden.dtype)
        return out

    return apply


def embedding_similarity(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, content: Tensor,
                         layer: int, reconstruct: Reconstruct, mode: str = "mean",
                         batch_size: int = 16) -> dict[str, float]:
    """{embed_cosine, embed_cosine_zero, embed_recovered} over sentences input_ids [B, T] (with special
    tokens), attention_mask [B, T], content [B, T] bool (positions spliced)."""
    block = find_blocks(model)[layer]
    sums = {"spliced": 0.0, "zero": 0.0}
    for start in range(0, len(input_ids), batch_size):
        part = slice(start, start + batch_size)
        ids, mask, where = input_ids[part], attention_mask[part], content[part].bool()
        clean = _embed(model, ids, mask, mode)
        spliced = _embed(model, ids, mask, mode, block, _splice(reconstruct, where))
        zero = _embed(model, ids, mask, mode, block, _splice(torch.zeros_like, where))
        sums["spliced"] += float(F.cosine_similarity(clean, spliced, dim=-1).sum())
        sums["zero"] += float(F.cosine_similarity(clean, zero, dim=-1).sum())
    cos, cos_zero = sums["spliced"] / len(input_ids), sums["zero"] / len(input_ids)
    recovered = (cos - cos_zero) / (1 - cos_zero) if cos_zero < 1 else float("nan")
    return {"embed_cosine": cos, "embed_cosine_zero": cos_zero, "embed_recovered": recovered}
