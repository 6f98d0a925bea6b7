"""Logit lens of SAE latents: the output tokens a latent's decoder direction promotes and suppresses.

For a causal LM with an unembedding W_U [d_model, vocab], latent j's direct effect on the logits is
W_dec[j] · W_U [vocab] (as in SAEDashboard and Neuronpedia: no final norm, which only rescales a
direction and so leaves its ranking of tokens nearly unchanged). Encoders (BERT and its kin) have no
unembedding: `unembedding` says so instead of inventing one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

TOP_TOKENS = 10
"""Promoted and suppressed tokens kept per latent."""


def unembedding(model: Any) -> tuple[Tensor | None, str]:
    """(W_U [d_model, vocab], "") of a causal LM, or (None, why not).

    The LM head when the model has one; else the input embeddings when the config ties them (GPT-2 and
    most small causal LMs loaded as a base model, whose head is the embedding matrix).
    """
    config = getattr(model, "config", None)
    architectures = " ".join(getattr(config, "architectures", None) or [])
    causal = bool(getattr(config, "is_decoder", False)) or "CausalLM" in architectures or "LMHead" in architectures \
        or getattr(config, "model_type", "") in {"gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "opt"}
    if not causal:
        kind = getattr(config, "model_type", type(model).__name__)
        return None, f"the subject model ({kind}) is an encoder without an unembedding: no output tokens"
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        return head.weight.detach().t(), ""
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "get_input_embeddings"):
        return model.get_input_embeddings().weight.detach().t(), ""
    return None, "the subject model was loaded without its LM head and does not tie it to its embeddings"


def top_output_tokens(w_dec: Tensor, w_u: Tensor, k: int = TOP_TOKENS,
                      batch: int = 1024) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per latent: (top values [n, k], top token ids [n, k], bottom values [n, k], bottom ids [n, k]) of
    W_dec · W_U; w_dec [n_latents, d_model], w_u [d_model, vocab]. Batched over latents: the full
    [n_latents, vocab] product of a 16k-latent SAE and a 50k vocabulary would be 3 GB."""
    w_u = w_u.to(torch.float32)
    k = min(k, w_u.shape[1])
    outs: list[list[Tensor]] = [[], [], [], []]
    with torch.no_grad():
        for start in range(0, w_dec.shape[0], batch):
            logits = w_dec[start:start + batch].to(device=w_u.device, dtype=torch.float32) @ w_u
            top, top_ids = logits.topk(k, dim=1)
            bottom, bottom_ids = (-logits).topk(k, dim=1)
            for out, t in zip(outs, (top, top_ids, -bottom, bottom_ids), strict=True):
                out.append(t.cpu())
    return tuple(torch.cat(o) for o in outs)  # type: ignore[return-value]
