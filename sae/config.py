"""Configuration of a TopK sparse autoencoder (SAEConfig) and of its training run (TrainConfig).

Every field carries a one-line docstring: the CLI turns those into `--help` text.
Defaults follow Gao et al. 2024 ("Scaling and evaluating sparse autoencoders") and OpenAI's reference.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NormalizeActivations = Literal["none", "layer_norm"]

LR_BASE = 1.6e-3
"""Peak lr at n_latents 2**14 and d_in LR_BASE_D_IN (8x Gao et al.'s 2e-4), scaled by 1/sqrt(n / 2**14) and
1/sqrt(d_in / LR_BASE_D_IN). Why (benchmarks/README.md, "Training convergence"; measured with every weight at
this lr, before DECODER_LR_SCALE): on the default run's
activations (MiniLM block 3, d_in 384, n 4096, k 32, 2M tokens) held-out FVU is 0.134 at Gao's lr, 0.095 at
4x and 0.085 at 8x with warm-up and decay, 0.086 at 16x constant (11% of latents silent), 0.083 at 8x with decay
only (the default schedule); the d_in term because Adam moves every weight by about
lr per step, so a unit decoder row turns by about lr * sqrt(d_in): on planted dictionaries in d_in 64 the
best lr is 2.5-3.5x the d_in-384 one (mean max cosine at n 2048, 147 steps: 0.63 at 1x, 0.85 at 2.45x)."""

LR_BASE_D_IN = 384
"""Input width at which LR_BASE was measured."""

DECODER_LR_SCALE = 4.0
"""W_dec learns at this multiple of the peak lr. Why: a unit-norm decoder row turns by about lr * sqrt(d_in)
per Adam step however large its gradient, and the rows are what must find the features (SAELens gets a
similar effect from rows initialised at norm 0.1: a step of lr turns them 10x as far). Measured with the
default schedule, one seed each (benchmarks/README.md, "Training convergence"): held-out FVU on the default
run's activations 0.0825 at 1x, 0.0794 at 3x, 0.0792 at 4x, 0.0788 at 5x; planted n 4096 at 147 steps, mean
max cosine 0.624 / 0.711 / 0.724 / 0.732 at 1x / 3x / 4x / 5x, but planted n 2048 at 586 steps 0.925 /
0.926 / 0.922 / 0.916: 4x is the largest that loses nowhere to SAELens. Without the final decay 3x is worse
on real data (0.0857 vs 0.0846 at 1x): the decay anneals the faster rows' noise."""


class SAEOptions(BaseModel):
    """Dictionary shape and objective of a TopK SAE, before its input width is known (a run's `sae`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    n_latents: int = Field(gt=0)
    """Number of dictionary latents (SAELens calls it d_sae)."""
    k: int = Field(gt=0)
    """Active latents per token (TopK)."""
    normalize_activations: NormalizeActivations = "layer_norm"
    """Input normalisation: "layer_norm" (per token: remove mean, divide by std; as SAELens) or "none"."""
    k_aux: int = Field(default=512, gt=0)
    """Dead latents used by AuxK per token (clamped to n_latents and to the number of dead latents)."""
    dead_tokens: int = Field(default=10_000_000, gt=0)
    """A latent that has not fired for this many training tokens counts as dead."""
    aux_coef: float = Field(default=1 / 32, ge=0)
    """Weight of the AuxK loss (0 turns it off)."""
    multi_topk: bool = False
    """Multi-TopK objective: L(k) + L(4k)/8, so the SAE also reconstructs well at a larger k."""
    batch_topk: bool = False
    """BatchTopK in training: keep the batch's top batch*k activations (<= 4k per token); encode() is TopK."""

    @model_validator(mode="after")
    def _check_sizes(self) -> SAEOptions:
        if self.k > self.n_latents:
            raise ValueError(f"k={self.k} exceeds n_latents={self.n_latents}")
        return self

    @property
    def k_aux_clamped(self) -> int:
        """k_aux limited to the dictionary size."""
        return min(self.k_aux, self.n_latents)

    @property
    def k_train(self) -> int:
        """Width of the sparse code during training: 4k with Multi-TopK or BatchTopK, else k."""
        wide = self.multi_topk or self.batch_topk
        return min(4 * self.k if wide else self.k, self.n_latents)


class SAEConfig(SAEOptions):
    """Shape and objective of a TopK SAE; saved with the weights (SAELens v6 `cfg.json`)."""

    d_in: int = Field(gt=0)
    """Width of the input activations (the subject model's d_model)."""


class TrainConfig(BaseModel):
    """How to train: token budget, Adam settings, precision, logging."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tokens: int = Field(default=10_000_000, gt=0)
    """Training tokens to consume (training stops earlier if the batches run out)."""
    batch_size: int = Field(default=4096, gt=0)
    """Tokens per optimiser step (informational: the batches iterable decides the real size)."""
    lr: float | None = Field(default=None, gt=0)
    """Peak Adam learning rate; None: LR_BASE / sqrt(n_latents / 2**14) / sqrt(d_in / 384) (see resolved_lr)."""
    decoder_lr_scale: float = Field(default=DECODER_LR_SCALE, gt=0)
    """W_dec's lr as a multiple of the peak lr (the encoder and biases get the peak lr itself)."""
    warmup_frac: float = Field(default=0.0, ge=0, lt=1)
    """Linear learning-rate warm-up over this fraction of the training steps (off: measured no help)."""
    decay_frac: float = Field(default=0.2, ge=0, le=1)
    """Linear decay of the learning rate to 0 over this final fraction of the training steps."""
    dead_window_frac: float = Field(default=0.05, gt=0, le=1)
    """AuxK's dead window: min(sae dead_tokens, this fraction of `tokens`), so AuxK engages in short runs."""
    heldout_frac: float = Field(default=0.1, ge=0, lt=1)
    """Share of an activation file's rows (the last ones, whole contexts) held out of training for held-out FVU."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    eps: float = Field(default=6.25e-10, gt=0)
    """Adam epsilon (Gao et al.)."""
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    """Keep an exponential moving average of the weights with this decay and return it (None: off)."""
    grad_clip: float | None = Field(default=None, gt=0)
    """Clip the global gradient norm to this value (None: off)."""
    seed: int = 0
    """Random seed for initialisation."""
    device: str = "cpu"
    """Torch device to train on ("cpu", "cuda", "cuda:1", ...)."""
    dtype: Literal["float32", "float64"] = "float32"
    """Dtype of the weights."""
    bf16_autocast: bool | None = None
    """Encoder matmul under bfloat16 autocast; None: on for CUDA and for CPUs with native bf16 (avx512_bf16/AMX)."""
    checkpoint_every: int = Field(default=100, gt=0)
    """Write a resumable checkpoint (SAE, Adam, counters, data position) every this many steps."""
    log_every: int = Field(default=100, gt=0)
    """Log training metrics every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar (in tokens)."""

    def resolved_lr(self, n_latents: int, d_in: int) -> float:
        """The peak learning rate actually used for a dictionary of n_latents over inputs of width d_in."""
        if self.lr is not None:
            return self.lr
        return LR_BASE / math.sqrt(n_latents / 2**14) / math.sqrt(d_in / LR_BASE_D_IN)

    def with_resolved_lr(self, n_latents: int, d_in: int) -> TrainConfig:
        """This config with `lr` set to resolved_lr: what keys a stored SAE or a checkpoint, since the
        default is a formula whose constants (LR_BASE, ...) may change between releases."""
        return self.model_copy(update={"lr": self.resolved_lr(n_latents, d_in)})

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of the peak lr at optimiser step `step` (0-based) of `total_steps`: warm-up, flat, decay."""
        total = max(total_steps, 1)
        warm, decay = self.warmup_frac * total, self.decay_frac * total
        if step < warm:
            return (step + 1) / (warm + 1)
        if decay > 0 and step >= total - decay:
            return max(total - step, 0) / decay
        return 1.0

    def use_bf16(self, device: str) -> bool:
        """Whether training on `device` runs the encoder under bf16 autocast (see bf16_autocast)."""
        if self.bf16_autocast is not None:
            return self.bf16_autocast
        return device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 GEMMs natively on this CPU (avx512_bf16 or AMX), where they are faster."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class EvalConfig(BaseModel):
    """How an SAE is evaluated into `sae_metrics` (held-out FVU, downstream, probe loss, ablation sparsity)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = True
    """Evaluate the SAE into sae_metrics after training or loading it."""
    max_tokens: int = Field(default=65_536, gt=0)
    """Held-out tokens evaluated at most (FVU, L0, dead latents)."""
    downstream_contexts: int = Field(default=32, ge=0)
    """Held-out contexts run through the model with the reconstruction spliced in (0: skip)."""
    probe_tokens: int = Field(default=16_384, ge=0)
    """Held-out tokens the 1-D logistic probes are fitted on (0: skip probe loss)."""
    probe_candidates: int = Field(default=8, gt=0)
    """Latents (and residual channels) per task fitted, preselected by |correlation| with the label."""
    ablation_positions: int = Field(default=8, ge=0)
    """Positions whose active latents are ablated for ablation sparsity (causal LMs; 0: skip)."""
    ablation_horizon: int = Field(default=16, gt=0)
    """T: next tokens whose logits an ablation is measured on."""
