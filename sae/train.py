"""Training loop for TopKSAE: Adam with optional warm-up and decay, unit-norm decoder rows, dead latents, EMA.

One step (training_step): forward (TopK, AuxK, Multi-TopK losses) -> backward through the sparse
kernels -> drop the gradient component parallel to each decoder row -> optional clipping -> Adam ->
rescale decoder rows to unit norm -> update the tokens-since-fired counters.

`train_sae` checks every batch for NaN/inf (ValueError naming the first bad row) and, given a checkpoint
path, saves SAE + Adam + schedule + counters + data position every `checkpoint_every` steps and resumes
from it (sae/checkpoint.py): with a `batches` callable that restarts the stream at a token offset, a
resumed run ends with the same SAE as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae.checkpoint import load_checkpoint, save_checkpoint
from sae.config import SAEConfig, TrainConfig
from sae.metrics import FVUAccumulator, l0, normalized_mse
from sae.model import SAEOutput, TopKSAE

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, TopKSAE, SAEOutput], None]
Batches = Iterable[Tensor] | Callable[[int], Iterable[Tensor]]
"""Training batches [batch, d_in], or a function of the tokens already consumed returning the rest of them."""


@dataclass
class TrainResult:
    """The trained SAE (in eval mode, on the training device) and summary statistics."""

    sae: TopKSAE
    stats: dict[str, float] = field(default_factory=dict)
    """fvu, nmse, l0 (raw space, over the last log window), dead_fraction, tokens_seen, steps, loss, lr (peak),
    decoder_lr (W_dec's peak), dead_window."""


def make_optimizer(sae: TopKSAE, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the paper's settings, W_dec at decoder_lr_scale times the peak lr; the fused kernel when
    this torch and device support it."""
    lr = cfg.resolved_lr(sae.cfg.n_latents, sae.cfg.d_in)
    groups = [{"params": [sae.W_dec], "lr": lr * cfg.decoder_lr_scale},
              {"params": [p for name, p in sae.named_parameters() if name != "W_dec"], "lr": lr}]
    kwargs = dict(lr=lr, betas=cfg.betas, eps=cfg.eps)
    try:
        return torch.optim.Adam(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up, flat, linear decay to 0 (TrainConfig.lr_factor) over the run's ceil(tokens / batch) steps."""
    total = math.ceil(cfg.tokens / cfg.batch_size)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cfg.lr_factor(step, total))


def dead_window(sae_cfg: SAEConfig, cfg: TrainConfig) -> int:
    """Tokens without firing after which a latent counts as dead: scaled to the run so AuxK engages."""
    return max(1, min(sae_cfg.dead_tokens, int(cfg.dead_window_frac * cfg.tokens)))


def update_dead_counter(sae: TopKSAE, values: Tensor, indices: Tensor) -> None:
    """Add the batch's tokens to every latent's tokens-since-fired counter, reset those that fired."""
    sae.tokens_since_fired += values.shape[0]
    sae.tokens_since_fired[indices[values > 0]] = 0


def training_step(sae: TopKSAE, optimizer: torch.optim.Optimizer, x: Tensor, cfg: TrainConfig) -> SAEOutput:
    """One optimiser step on x [batch, d_in]; returns the forward's output (losses, code)."""
    device = x.device.type
    use_autocast = cfg.use_bf16(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
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


def check_finite(x: Tensor, tokens_before: int) -> None:
    """ValueError naming the first row of x [batch, d_in] with NaN/inf (its index in the token stream)."""
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"non-finite activations (NaN/inf) in training token {tokens_before + row} "
                         f"(row {row} of batch starting at token {tokens_before}); fix the activations")


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
    """Latents that stopped firing: silent over the last dead window (or the whole run, if shorter)."""
    window = min(sae.dead_window, max(tokens_seen, 1))
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


@dataclass
class _State:
    """Everything a resumed run needs besides the data: the modules and the loop's counters."""

    sae: TopKSAE
    optimizer: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: dict[str, Tensor] | None
    window: _Window = field(default_factory=_Window)
    last: dict[str, float] = field(default_factory=dict)
    tokens_seen: int = 0
    step: int = 0

    def snapshot(self, config_hash: str) -> dict:
        return {"config_hash": config_hash, "sae": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "since_fired": self.sae.tokens_since_fired.clone(),
                "ema": self.ema, "window": self.window, "last": self.last, "tokens_seen": self.tokens_seen,
                "step": self.step}

    def restore(self, snap: dict) -> None:
        self.sae.load_state_dict(snap["sae"])
        self.optimizer.load_state_dict(snap["optimizer"])
        self.scheduler.load_state_dict(snap["scheduler"])
        self.sae.tokens_since_fired.copy_(snap["since_fired"])
        self.ema, self.window, self.last = snap["ema"], snap["window"], snap["last"]
        self.tokens_seen, self.step = snap["tokens_seen"], snap["step"]


def _init_state(sae_cfg: SAEConfig, cfg: TrainConfig, init_sample: Tensor) -> _State:
    torch.manual_seed(cfg.seed)
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    sae = TopKSAE(sae_cfg).to(device=device, dtype=dtype).train()
    sae.dead_window = dead_window(sae_cfg, cfg)
    sae.init_b_dec(init_sample.to(device=device, dtype=dtype))
    optimizer = make_optimizer(sae, cfg)
    ema = {n: p.detach().clone() for n, p in sae.named_parameters()} if cfg.ema_decay else None
    return _State(sae, optimizer, make_scheduler(optimizer, cfg), ema)


def _hash(sae_cfg: SAEConfig, cfg: TrainConfig) -> str:
    """Hash of every setting that shapes the trained SAE: a checkpoint of other settings is never resumed."""
    train = cfg.with_resolved_lr(sae_cfg.n_latents, sae_cfg.d_in).model_dump(
        mode="json", exclude={"log_every", "progress", "checkpoint_every"})
    payload = {"sae": sae_cfg.model_dump(mode="json"), "train": train}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_sae(
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    batches: Batches,
    init_sample: Tensor,
    callback: StepCallback | None = None,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train a TopKSAE on batches [batch, d_in] until train_cfg.tokens tokens (or the batches) run out.

    init_sample [n_sample, d_in] (raw activations, a few thousand tokens) sets b_dec to its geometric
    median. callback(step, sae, out), if given, runs after every optimiser step. checkpoint: where to
    save (and resume from) the training state; the caller removes it once the SAE is saved.
    """
    st = _init_state(sae_cfg, train_cfg, init_sample)
    key = _hash(sae_cfg, train_cfg)
    if (snap := load_checkpoint(checkpoint, key)) is not None:
        st.restore(snap)
    stream = batches(st.tokens_seen) if callable(batches) else batches
    device, dtype = st.sae.W_dec.device, st.sae.W_dec.dtype
    bar = tqdm(total=train_cfg.tokens, initial=st.tokens_seen, unit="tok", unit_scale=True, desc="train SAE",
               disable=not train_cfg.progress)
    for batch in stream:
        if st.tokens_seen >= train_cfg.tokens:
            break
        x = batch.to(device=device, dtype=dtype, non_blocking=True)
        check_finite(x, st.tokens_seen)
        out = training_step(st.sae, st.optimizer, x, train_cfg)
        st.scheduler.step()
        st.step, st.tokens_seen = st.step + 1, st.tokens_seen + x.shape[0]
        if st.ema is not None:
            _ema_update(st.ema, st.sae, train_cfg.ema_decay)
        st.window.add(x, out)
        bar.update(x.shape[0])
        if callback is not None:
            callback(st.step, st.sae, out)
        if st.step % train_cfg.log_every == 0:
            st.last, st.window = st.window.summary(), _Window()
            bar.set_postfix(fvu=f"{st.last['fvu']:.3f}", l0=f"{st.last['l0']:.1f}")
            logger.info("step %d tokens %d loss %.4f fvu %.4f l0 %.1f dead %.3f", st.step, st.tokens_seen,
                        st.last["loss"], st.last["fvu"], st.last["l0"], _dead_fraction(st.sae, st.tokens_seen))
        if checkpoint is not None and st.step % train_cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint, st.snapshot(key))
    bar.close()
    return _finish(st, sae_cfg, train_cfg)


def _finish(st: _State, sae_cfg: SAEConfig, train_cfg: TrainConfig) -> TrainResult:
    if st.step == 0:
        raise ValueError("train_sae got no batches")
    if st.ema is not None:
        _load_ema(st.sae, st.ema)
    stats = st.window.summary() if st.window.steps else st.last
    lr = train_cfg.resolved_lr(sae_cfg.n_latents, sae_cfg.d_in)
    stats.update(dead_fraction=_dead_fraction(st.sae, st.tokens_seen), tokens_seen=st.tokens_seen, steps=st.step,
                 lr=lr, decoder_lr=lr * train_cfg.decoder_lr_scale, dead_window=st.sae.dead_window)
    logger.info("trained SAE: %s", stats)
    return TrainResult(st.sae.eval(), stats)
