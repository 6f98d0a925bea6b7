"""Training loop for TopKSAE: Adam, unit-norm decoder rows, dead-latent tracking, optional EMA.

One step (training_step): forward (TopK, AuxK, Multi-TopK losses) -> backward through the sparse
kernels -> drop the gradient component parallel to each decoder row -> optional clipping -> Adam ->
rescale decoder rows to unit norm -> update the tokens-since-fired counters.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae.config import SAEConfig, TrainConfig
from sae.metrics import FVUAccumulator, l0, normalized_mse
from sae.model import SAEOutput, TopKSAE

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, TopKSAE, SAEOutput], None]


@dataclass
class TrainResult:
    """The trained SAE (in eval mode, on the training device) and summary statistics."""

    sae: TopKSAE
    stats: dict[str, float] = field(default_factory=dict)
    """fvu, nmse, l0 (raw space, over the last log window), dead_fraction, tokens_seen, steps, loss, lr."""


def make_optimizer(sae: TopKSAE, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the paper's settings; the fused kernel when this torch and device support it."""
    kwargs = dict(lr=cfg.resolved_lr(sae.cfg.n_latents), betas=cfg.betas, eps=cfg.eps)
    try:
        return torch.optim.Adam(sae.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(sae.parameters(), **kwargs)


def update_dead_counter(sae: TopKSAE, values: Tensor, indices: Tensor) -> None:
    """Add the batch's tokens to every latent's tokens-since-fired counter, reset those that fired."""
    sae.tokens_since_fired += values.shape[0]
    sae.tokens_since_fired[indices[values > 0]] = 0


def training_step(sae: TopKSAE, optimizer: torch.optim.Optimizer, x: Tensor, cfg: TrainConfig) -> SAEOutput:
    """One optimiser step on x [batch, d_in]; returns the forward's output (losses, code)."""
    use_autocast = x.is_cuda and cfg.bf16_autocast
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
    with autocast:
        out = sae(x)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    sae.remove_parallel_decoder_grad()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
    optimizer.step()
    sae.normalize_decoder_rows()
    update_dead_counter(sae, out.values.detach(), out.indices)
    return out


class _Window:
    """Running sums of the raw-space metrics over the current logging window."""

    def __init__(self) -> None:
        self.fvu = FVUAccumulator()
        self.nmse = self.l0 = self.loss = 0.0
        self.steps = 0

    @torch.no_grad()
    def add(self, x: Tensor, out: SAEOutput) -> None:
        self.fvu.add(x, out.x_hat)
        self.nmse += normalized_mse(x, out.x_hat)
        self.l0 += l0(out.values)
        self.loss += float(out.loss)
        self.steps += 1

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {"fvu": self.fvu.value(), "nmse": self.nmse / n, "l0": self.l0 / n, "loss": self.loss / n}


def _dead_fraction(sae: TopKSAE, tokens_seen: int) -> float:
    """Latents silent for the dead window (or for the whole run, if shorter than the window)."""
    window = min(sae.cfg.dead_tokens, max(tokens_seen, 1))
    return float((sae.tokens_since_fired >= window).float().mean())


def _ema_update(ema: dict[str, Tensor], sae: TopKSAE, decay: float) -> None:
    with torch.no_grad():
        for name, param in sae.named_parameters():
            ema[name].lerp_(param, 1 - decay)


def _load_ema(sae: TopKSAE, ema: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(ema[name])
        sae.normalize_decoder_rows()


def train_sae(
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    batches: Iterable[Tensor],
    init_sample: Tensor,
    callback: StepCallback | None = None,
) -> TrainResult:
    """Train a TopKSAE on batches [batch, d_in] until train_cfg.tokens tokens (or the batches) run out.

    init_sample [n_sample, d_in] (raw activations, a few thousand tokens) sets b_dec to its geometric
    median. callback(step, sae, out), if given, runs after every optimiser step.
    """
    torch.manual_seed(train_cfg.seed)
    device, dtype = torch.device(train_cfg.device), getattr(torch, train_cfg.dtype)
    sae = TopKSAE(sae_cfg).to(device=device, dtype=dtype).train()
    sae.init_b_dec(init_sample.to(device=device, dtype=dtype))
    optimizer = make_optimizer(sae, train_cfg)
    ema = {n: p.detach().clone() for n, p in sae.named_parameters()} if train_cfg.ema_decay else None
    window, last, tokens_seen, step = _Window(), {}, 0, 0
    bar = tqdm(total=train_cfg.tokens, unit="tok", unit_scale=True, desc="train SAE", disable=not train_cfg.progress)
    for batch in batches:
        if tokens_seen >= train_cfg.tokens:
            break
        x = batch.to(device=device, dtype=dtype, non_blocking=True)
        out = training_step(sae, optimizer, x, train_cfg)
        step, tokens_seen = step + 1, tokens_seen + x.shape[0]
        if ema is not None:
            _ema_update(ema, sae, train_cfg.ema_decay)
        window.add(x, out)
        bar.update(x.shape[0])
        if callback is not None:
            callback(step, sae, out)
        if step % train_cfg.log_every == 0:
            last, window = window.summary(), _Window()
            bar.set_postfix(fvu=f"{last['fvu']:.3f}", l0=f"{last['l0']:.1f}")
            logger.info("step %d tokens %d loss %.4f fvu %.4f l0 %.1f dead %.3f", step, tokens_seen,
                        last["loss"], last["fvu"], last["l0"], _dead_fraction(sae, tokens_seen))
    bar.close()
    if step == 0:
        raise ValueError("train_sae got no batches")
    if ema is not None:
        _load_ema(sae, ema)
    stats = window.summary() if window.steps else last
    stats.update(dead_fraction=_dead_fraction(sae, tokens_seen), tokens_seen=tokens_seen, steps=step,
                 lr=train_cfg.resolved_lr(sae_cfg.n_latents))
    logger.info("trained SAE: %s", stats)
    return TrainResult(sae.eval(), stats)
