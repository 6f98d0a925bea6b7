"""Ablation sparsity (Gao et al. 2024, section 4.5): how sparse the downstream effect of one latent is.

For a context and a position p, each latent j active at p is ablated: its contribution a_j * W_dec[j] (in
raw space) is subtracted from block `layer`'s output at p, the rest of the causal LM runs, and the
change of the logits at positions p .. p+T-1 forms a vector v of V*T entries (V: vocabulary). Its
sparsity is (||v||_1 / ||v||_2)^2 / (V*T): 1 when every logit moves equally, 1/(V*T) when one logit moves.
The metric is the mean over ablations. Encoders have no next-token logits: the metric is null for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sae.splice import edited_output

Contribution = Callable[[Tensor], tuple[Tensor, Tensor]]
"""activations [d] -> (latent ids [m], contributions [m, d]): each active latent's raw-space term."""


def _logits(model: nn.Module, ids: Tensor, block: nn.Module | None = None,
            edit: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Logits [B, T, V] of ids [B, T], with block's output edited when edit is given."""
    with edited_output(block, edit), torch.inference_mode():
        out = model(input_ids=ids)
    return (out.logits if hasattr(out, "logits") else out).float()  # an HF output or a plain tensor


def _capture(model: nn.Module, ids: Tensor, block: nn.Module) -> Tensor:
    """Block output [B, T, d] of a clean run."""
    seen: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        seen["h"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = block.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model(input_ids=ids)
    finally:
        handle.remove()
    return seen["h"]


def sparsity(diff: Tensor) -> float:
    """(L1/L2)^2 / numel of a logit-difference tensor; nan when nothing changed."""
    l2 = float(diff.pow(2).sum().sqrt())
    return float((diff.abs().sum() / l2) ** 2 / diff.numel()) if l2 > 0 else float("nan")


def ablation_sparsity(model: nn.Module, block: nn.Module, token_ids: Tensor, positions: list[tuple[int, int]],
                      contribution: Contribution, horizon: int = 16) -> float:
    """Mean ablation sparsity over the active latents at the given (context, position) pairs.

    token_ids [B, T] (no padding); positions: (row, p) pairs; contribution: see `Contribution`. Ablations
    of one position run as one batch.
    """
    values = []
    for row, p in positions:
        ids = token_ids[row : row + 1]
        clean_logits = _logits(model, ids)[0]  # [T, V]
        hidden = _capture(model, ids, block)[0]  # [T, d]
        _latents, terms = contribution(hidden[p])
        if len(terms) == 0:
            continue
        end = min(p + horizon, ids.shape[1])

        def edit(h: Tensor, terms: Tensor = terms, p: int = p) -> Tensor:
            out = h.clone()
            out[:, p] = out[:, p] - terms.to(h.dtype)
            return out

        ablated = _logits(model, ids.expand(len(terms), -1), block, edit)  # [m, T, V]
        for m in range(len(terms)):
            s = sparsity(ablated[m, p:end] - clean_logits[p:end])
            if s == s:  # skip no-effect ablations (nan)
                values.append(s)
    return float(sum(values) / len(values)) if values else float("nan")
