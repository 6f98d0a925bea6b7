"""The metrics of sae_metrics that run the subject model: downstream loss and ablation sparsity.

Causal LMs are reloaded with their LM head (the subject model is the bare transformer): delta CE, KL and
loss recovered against zero-ablation (sae/downstream.py), then ablation sparsity (sae/ablation.py).
Encoders: cosine of clean and spliced sentence embeddings, pooled as the model does (sae/embedding_loss.py).
"""

from __future__ import annotations

import logging

import torch

from flows.config import RunConfig

log = logging.getLogger(__name__)


def is_causal(subject) -> bool:
    """A decoder-only LM (GPT-2, Llama, ...): its config says so or its architectures end in ForCausalLM."""
    config = subject.model.config
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel")
                                                              for a in archs)


def _lm_with_head(subject):
    from transformers import AutoModelForCausalLM

    source = subject.source_dir or subject.name
    return AutoModelForCausalLM.from_pretrained(str(source)).to(subject.device).eval()


def causal_metrics(cfg: RunConfig, subject, layer: int, sae, token_ids: list[list[int]], row: dict,
                   notes: list[str]) -> None:
    """delta_ce, kl, loss_recovered and ablation_sparsity into row."""
    from sae.ablation import ablation_sparsity
    from sae.data.subject import find_blocks, pad_contexts
    from sae.downstream import downstream_loss
    from sae.evaluate import contributions, reconstructor

    try:
        lm = _lm_with_head(subject)
    except (OSError, ValueError) as exc:
        notes.append(f"no LM head for {subject.name}: {str(exc).splitlines()[0]}")
        return
    ids, lengths = pad_contexts(token_ids, subject.pad_id)
    if subject.prefix_ids:  # the SAE saw content tokens only: BOS is kept out of the splice below
        ids = torch.cat([torch.tensor([subject.prefix_ids] * len(ids)), ids], 1)
    mask = (torch.arange(ids.shape[1])[None] < (lengths + len(subject.prefix_ids))[:, None]).long()
    result = downstream_loss(lm, ids, layer, reconstructor(sae), mask, zero_ablation=True)
    row.update(delta_ce=result["delta_ce"], kl=result["kl"], loss_recovered=result["loss_recovered"])
    n_pos = cfg.sae_eval.ablation_positions
    if n_pos:
        gen = torch.Generator().manual_seed(cfg.seed)
        width = int(lengths.min())
        rows = torch.randint(0, len(ids), (n_pos,), generator=gen).tolist()
        cols = torch.randint(len(subject.prefix_ids), width, (n_pos,), generator=gen).tolist()
        pairs = list(zip(rows, cols, strict=True))
        row["ablation_sparsity"] = ablation_sparsity(lm, find_blocks(lm)[layer], ids, pairs, contributions(sae),
                                                     cfg.sae_eval.ablation_horizon)


def encoder_metrics(subject, layer: int, sae, token_ids: list[list[int]], row: dict) -> None:
    """embed_cosine, embed_cosine_zero and embed_recovered into row."""
    from sae.data.subject import pad_contexts
    from sae.embedding_loss import embedding_similarity, pooling_mode
    from sae.evaluate import reconstructor

    ids, lengths = pad_contexts(token_ids, subject.pad_id)
    input_ids, attention_mask = subject._with_special_tokens(ids, lengths)
    n_prefix = len(subject.prefix_ids)
    positions = torch.arange(input_ids.shape[1])[None]
    content = (positions >= n_prefix) & (positions < n_prefix + lengths[:, None])
    device = subject.device
    row.update(embedding_similarity(subject.model, input_ids.to(device), attention_mask.to(device), content.to(device),
                                    layer, reconstructor(sae), pooling_mode(subject.source_dir)))
