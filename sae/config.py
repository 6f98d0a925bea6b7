"""Configuration of a TopK sparse autoencoder (SAEConfig) and of its training run (TrainConfig).

Every field carries a one-line docstring: the CLI turns those into `--help` text.
Defaults follow Gao et al. 2024 ("Scaling and evaluating sparse autoencoders") and OpenAI's reference.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NormalizeActivations = Literal["none", "layer_norm"]


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
    """Adam learning rate; None means 2e-4 / sqrt(n_latents / 2**14) (Gao et al. scaling)."""
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
    bf16_autocast: bool = True
    """On CUDA, run the encoder matmul under bfloat16 autocast (ignored on CPU)."""
    log_every: int = Field(default=100, gt=0)
    """Log training metrics every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar (in tokens)."""

    def resolved_lr(self, n_latents: int) -> float:
        """The learning rate actually used for a dictionary of n_latents."""
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(n_latents / 2**14)
