"""TopK sparse autoencoder (Gao et al. 2024), parameter names and shapes as in SAELens v6.

Parameters: W_enc [d_in, n_latents], b_enc [n_latents], W_dec [n_latents, d_in], b_dec [d_in].

Encoding x [batch, d_in] (raw activations):
1. normalise (cfg.normalize_activations):
   - "none": x_n = x.
   - "layer_norm": per token, mu = mean(x), xc = x - mu, std = xc.std() (unbiased, over d_in),
     x_n = xc / (std + 1e-5). Identical to SAELens's "layer_norm" and OpenAI's LN: a token's
     normalised vector has zero mean and norm ~sqrt(d_in - 1). No dataset statistics are involved,
     so nothing beyond `normalize_activations` needs to be stored with the SAE.
2. pre = (x_n - b_dec) @ W_enc + b_enc; keep the top k pre-activations per token, then ReLU.
Decoding: x_hat_n = sum_j values_j * W_dec[indices_j] + b_dec, then undo the normalisation with the
*same token's* stats: x_hat = x_hat_n * std + mu (SAELens multiplies by std without the eps; so do we).
The training loss is computed in the normalised space, as in the paper.

Only the encoder matmul is dense; see sae/kernels.py for the sparse autograd Functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sae.config import SAEConfig
from sae.kernels import sparse_decode, topk_encode
from sae.metrics import fvu_loss

LN_EPS = 1e-5
NormStats = tuple[Tensor, Tensor]  # per-token mean and std, each [batch, 1]


@dataclass
class SAEOutput:
    """What a training forward returns; losses are scalars in the normalised space."""

    x_hat: Tensor
    """[batch, d_in] reconstruction in the raw input space."""
    values: Tensor
    """[batch, k] post-ReLU TopK activations (sorted descending)."""
    indices: Tensor
    """[batch, k] latent ids of `values`."""
    loss: Tensor
    """recon_loss + aux_coef * aux_loss (+ multi_topk_loss / 8)."""
    recon_loss: Tensor
    """Squared error / total variance of the batch (the batch FVU, `sae.metrics.fvu_loss`)."""
    aux_loss: Tensor
    """AuxK: dead latents reconstructing the residual, over the residual's variance (0 if none dead)."""
    multi_topk_loss: Tensor
    """Recon loss at 4k (0 unless cfg.multi_topk)."""


class TopKSAE(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        W_dec = torch.randn(cfg.n_latents, cfg.d_in)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.t().clone().contiguous())  # tied at init
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        # training state, not part of the saved SAE
        since_fired = torch.zeros(cfg.n_latents, dtype=torch.long)
        self.register_buffer("tokens_since_fired", since_fired, persistent=False)
        self.dead_window = cfg.dead_tokens
        """Tokens without firing after which a latent is dead (AuxK); the trainer scales it to the run."""
        self._workspace: Tensor | None = None

    def pre_workspace(self, x: Tensor) -> Tensor | None:
        """While training on CPU: a [batch, n_latents] scratch for the pre-activations, kept across steps.

        Why: a fresh [4096, 4096] fp32 tensor is 64 MB, beyond glibc's mmap threshold, so every step maps new
        pages and the kernel zeroes them on first touch: torch.mm into a fresh output took 111 ms vs 90 ms
        into a reused one (n 4096; 455 vs 373 ms at n 16384; d 384, batch 4096, 2 cores). CUDA's caching
        allocator already reuses memory, and pinning a buffer there would only raise the peak. Dropped on
        .eval(), so a trained SAE holds no extra memory.
        """
        if not self.training or x.device.type != "cpu" or _cpu_autocast():
            return None  # under autocast the matmul must be free to produce bf16
        shape = (x.shape[0], self.cfg.n_latents)
        ws = self._workspace
        if ws is None or ws.shape != shape or ws.dtype != x.dtype:
            ws = self._workspace = x.new_empty(shape)
        return ws

    def train(self, mode: bool = True) -> TopKSAE:
        if not mode:
            self._workspace = None
        return super().train(mode)

    # --- normalisation -------------------------------------------------------------------------
    def normalize(self, x: Tensor) -> tuple[Tensor, NormStats]:
        """x [batch, d_in] raw -> (x_n [batch, d_in], (mu, std) each [batch, 1])."""
        if self.cfg.normalize_activations == "none":
            return x, (x.new_zeros(x.shape[0], 1), x.new_ones(x.shape[0], 1))
        mu = x.mean(dim=-1, keepdim=True)
        centred = x - mu
        std = centred.std(dim=-1, keepdim=True)
        return centred / (std + LN_EPS), (mu, std)

    def input_stats(self, x: Tensor) -> NormStats:
        """Per-token (mu, std) of raw x [batch, d_in]; pass them to decode() to get raw-space output."""
        return self.normalize(x)[1]

    # --- encode / decode -----------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [batch, d_in] raw -> values [batch, k] (post-ReLU, descending), indices [batch, k] long."""
        x_n, _ = self.normalize(x)
        values, indices, _, _ = topk_encode(x_n, self.b_dec, self.W_enc, self.b_enc, self.cfg.k)
        return values, indices

    def decode(self, values: Tensor, indices: Tensor, stats: NormStats | None = None) -> Tensor:
        """values, indices [batch, m] -> [batch, d_in] in the raw input space.

        With "layer_norm" the raw space needs the token's stats: pass `stats=sae.input_stats(x)`
        (or use `sae(x).x_hat`). Without them this raises rather than silently return normalised output.
        """
        x_hat_n = sparse_decode(values, indices, self.W_dec) + self.b_dec
        if self.cfg.normalize_activations == "none":
            return x_hat_n
        if stats is None:
            raise ValueError("a layer_norm SAE's decode() needs stats=sae.input_stats(x) for raw space")
        mu, std = stats
        return x_hat_n * std + mu

    # --- training forward ------------------------------------------------------------------------
    def dead_mask(self) -> Tensor:
        """[n_latents] bool: latents that have not fired for dead_window training tokens."""
        return self.tokens_since_fired >= self.dead_window

    def forward(self, x: Tensor) -> SAEOutput:
        """x [batch, d_in] raw -> SAEOutput with reconstruction, code and losses (AuxK, Multi-TopK)."""
        cfg = self.cfg
        x_n, stats = self.normalize(x)
        use_aux = self.training and cfg.aux_coef > 0
        width = cfg.k_train if self.training else cfg.k
        values, indices, aux_values, aux_indices = topk_encode(
            x_n, self.b_dec, self.W_enc, self.b_enc, width,
            self.dead_mask() if use_aux else None, cfg.k_aux_clamped, self.pre_workspace(x_n),
        )
        wide_values, wide_indices = values, indices
        if self.training and cfg.batch_topk:
            values = batch_topk_mask(values, cfg.k)
        elif width > cfg.k:
            values, indices = values[:, : cfg.k], indices[:, : cfg.k]
        x_hat_n = sparse_decode(values, indices, self.W_dec) + self.b_dec
        recon_loss = fvu_loss(x_n, x_hat_n)
        loss, zero = recon_loss, recon_loss.new_zeros(())
        aux_loss = multi_loss = zero
        if aux_indices.shape[1] > 0:
            residual = (x_n - x_hat_n).detach()
            aux_loss = fvu_loss(residual, sparse_decode(aux_values, aux_indices, self.W_dec))
            loss = loss + cfg.aux_coef * aux_loss
        if self.training and cfg.multi_topk:
            wide_x_hat_n = sparse_decode(wide_values, wide_indices, self.W_dec) + self.b_dec
            multi_loss = fvu_loss(x_n, wide_x_hat_n)
            loss = loss + multi_loss / 8
        x_hat = x_hat_n if cfg.normalize_activations == "none" else x_hat_n * stats[1] + stats[0]
        return SAEOutput(x_hat, values, indices, loss, recon_loss, aux_loss, multi_loss)

    # --- initialisation and decoder constraints --------------------------------------------------
    @torch.no_grad()
    def init_b_dec(self, sample: Tensor, iters: int = 20) -> None:
        """Set b_dec to the geometric median of the normalised sample [n_sample, d_in]."""
        x_n, _ = self.normalize(sample.to(self.b_dec))
        self.b_dec.copy_(geometric_median(x_n, iters))

    @torch.no_grad()
    def normalize_decoder_rows(self) -> None:
        """Rescale each W_dec row to unit norm (done after every optimiser step)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row, before the optimiser step."""
        if self.W_dec.grad is not None:
            along = torch.linalg.vecdot(self.W_dec.grad, self.W_dec)  # [n_latents]
            self.W_dec.grad.addcmul_(along.unsqueeze(1), self.W_dec, value=-1)


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def batch_topk_mask(values: Tensor, k: int) -> Tensor:
    """BatchTopK: keep the batch's top batch*k entries of values [batch, m] (m >= k), zero the rest."""
    n_keep = min(values.shape[0] * k, values.numel())
    threshold = torch.topk(values.detach().reshape(-1), n_keep, sorted=False).values.min()
    return values * (values >= threshold).to(values.dtype)


@torch.no_grad()
def geometric_median(points: Tensor, iters: int = 20, eps: float = 1e-8) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of distances to points [n, d] -> [d]."""
    median = points.mean(0)
    for _ in range(iters):
        weights = 1 / (points - median).norm(dim=1).clamp_min(eps)
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median
