"""Downstream loss of an SAE in a causal LM: splice the reconstruction into the residual stream.

The output of block `layer` (the residual stream after that block, see sae/data/subject.py) is replaced
by `reconstruct(output)` at every non-padding position, the rest of the model runs on it, and we compare
the next-token predictions with the clean run: cross-entropy on the true next tokens (clean, patched,
delta) and the KL divergence KL(clean || patched) of the next-token distributions, both averaged over the
predicted positions. Optionally also a zero-ablation run and the fraction of CE loss recovered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae.data.subject import find_blocks
from sae.splice import Reconstruct, edited_output

logger = logging.getLogger(__name__)



def downstream_loss(
    model: nn.Module,
    token_ids: Tensor,
    layer: int,
    reconstruct: Reconstruct,
    attention_mask: Tensor | None = None,
    batch_size: int = 16,
    zero_ablation: bool = False,
) -> dict[str, float]:
    """CE and KL of a causal LM when block `layer`'s output is replaced by its reconstruction.

    token_ids: LongTensor [B, T] (include BOS yourself if the model expects one); attention_mask:
    [B, T] 1 on real tokens (right padding), default all ones. Returns ce_clean, ce_patched, delta_ce
    (= ce_patched - ce_clean, nats/token), kl (mean KL(clean || patched), nats/token) and n_predictions;
    with zero_ablation also ce_zero and loss_recovered = (ce_zero - ce_patched) / (ce_zero - ce_clean).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(token_ids)
    if token_ids.shape != attention_mask.shape or token_ids.ndim != 2:
        raise ValueError(f"token_ids {list(token_ids.shape)} and attention_mask "
                         f"{list(attention_mask.shape)} must both be [batch, seq]")
    blocks = find_blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer must be in 0..{len(blocks) - 1}, got {layer}")
    totals = {"ce_clean": 0.0, "ce_patched": 0.0, "kl": 0.0, "ce_zero": 0.0, "n": 0.0}
    device = next(model.parameters()).device
    for start in range(0, len(token_ids), batch_size):
        ids = token_ids[start : start + batch_size].to(device)
        mask = attention_mask[start : start + batch_size].to(device)
        _accumulate(totals, model, blocks[layer], ids, mask, reconstruct, zero_ablation)
    return _summarise(totals, zero_ablation)


def _accumulate(
    totals: dict[str, float],
    model: nn.Module,
    block: nn.Module,
    ids: Tensor,
    mask: Tensor,
    reconstruct: Reconstruct,
    zero_ablation: bool,
) -> None:
    """Add one batch's summed CE (clean, patched, zero), KL and prediction count to `totals`."""
    targets, target_mask = ids[:, 1:], (mask[:, 1:] * mask[:, :-1]).bool()
    clean = _log_probs(model, ids, mask)
    patched = _log_probs(model, ids, mask, block, _patch(reconstruct, mask))
    totals["ce_clean"] += _summed_ce(clean, targets, target_mask)
    totals["ce_patched"] += _summed_ce(patched, targets, target_mask)
    kl = (clean.exp() * (clean - patched)).sum(-1)  # [B, T-1]
    totals["kl"] += float(kl[target_mask].sum())
    totals["n"] += float(target_mask.sum())
    if zero_ablation:
        zeroed = _log_probs(model, ids, mask, block, _patch(torch.zeros_like, mask))
        totals["ce_zero"] += _summed_ce(zeroed, targets, target_mask)


def _patch(reconstruct: Reconstruct, mask: Tensor) -> Callable[[Tensor], Tensor]:
    """hidden [B, T, d] -> hidden with reconstruct() applied to the non-padding positions."""

    def apply(hidden: Tensor) -> Tensor:
        keep = mask.bool()
        patched = hidden.clone()
        flat = hidden[keep]  # [n_tokens, d]
        patched[keep] = reconstruct(flat).to(hidden.dtype).reshape(flat.shape)
        return patched

    return apply


def _log_probs(
    model: nn.Module,
    ids: Tensor,
    mask: Tensor,
    block: nn.Module | None = None,
    edit: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Next-token log-probabilities [B, T-1, vocab], optionally with block's output edited."""
    with edited_output(block, edit), torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return F.log_softmax(logits[:, :-1].float(), dim=-1)


def _summed_ce(log_probs: Tensor, targets: Tensor, target_mask: Tensor) -> float:
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    return float(-picked[target_mask].sum())


def _summarise(totals: dict[str, float], zero_ablation: bool) -> dict[str, float]:
    n = totals["n"]
    if n == 0:
        raise ValueError("no next-token predictions: sequences need at least 2 real tokens")
    result = {
        "ce_clean": totals["ce_clean"] / n,
        "ce_patched": totals["ce_patched"] / n,
        "kl": totals["kl"] / n,
        "n_predictions": n,
    }
    result["delta_ce"] = result["ce_patched"] - result["ce_clean"]
    if zero_ablation:
        result["ce_zero"] = totals["ce_zero"] / n
        gap = result["ce_zero"] - result["ce_clean"]
        result["loss_recovered"] = (result["ce_zero"] - result["ce_patched"]) / gap if gap else float("nan")
    logger.info("downstream loss: %s", {k: round(v, 5) for k, v in result.items()})
    return result
