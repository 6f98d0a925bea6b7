"""Sparse autograd kernels for TopK SAEs: the encoder forward is the only dense matmul.

A TopK SAE uses k latents per token, so everything after x @ W_enc can work on the k (plus k_aux
dead) selected entries per token instead of on a dense [batch, n_latents] tensor:

- `topk_encode`: (x - b_dec) @ W_enc + b_enc (dense), TopK then ReLU, and optionally the top k_aux
  dead latents for AuxK. The dense pre-activations are freed before returning; the backward pass
  touches only the selected entries (O(batch * m * d) work for m selected entries per token).
- `sparse_decode`: sum_j values[b, j] * W_dec[indices[b, j]] (an embedding bag), sparse backward.

Two building blocks carry the backward passes; both have a CPU form (sparse CSR products, which
run multi-threaded through MKL and never copy the [batch, m, d] gathered rows) and a CUDA form
(gather / index_add, which GPUs run well). Both are plain PyTorch: no Triton, no C++.
`dense_reference_*` are the obvious dense versions that the tests compare against.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix, without torch's per-construction "sparse CSR is beta" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def scatter_outer(indices: Tensor, weights: Tensor, rows: Tensor, n_out: int) -> Tensor:
    """out[i] = sum of weights[b, j] * rows[b] over all (b, j) with indices[b, j] == i.

    indices, weights [batch, m]; rows [batch, d] -> [n_out, d]. This is S.T @ rows for the sparse
    [batch, n_out] matrix S holding `weights` at `indices` (duplicates add up).
    """
    if rows.is_cuda:
        return scatter_outer_index_add(indices, weights, rows, n_out)
    return scatter_outer_csr(indices, weights, rows, n_out)


def scatter_outer_index_add(indices: Tensor, weights: Tensor, rows: Tensor, n_out: int) -> Tensor:
    """scatter_outer by index_add of the [batch * m, d] weighted rows (the GPU form)."""
    src = (weights.unsqueeze(-1) * rows.unsqueeze(1)).reshape(-1, rows.shape[1])
    return rows.new_zeros(n_out, rows.shape[1]).index_add_(0, indices.reshape(-1), src)


def scatter_outer_csr(indices: Tensor, weights: Tensor, rows: Tensor, n_out: int) -> Tensor:
    """scatter_outer as a CSR [n_out, batch] @ dense [batch, d] product (the CPU form)."""
    batch, m = indices.shape
    flat = indices.reshape(-1)
    order = torch.argsort(flat)
    crow = torch.zeros(n_out + 1, dtype=torch.int64, device=indices.device)
    torch.cumsum(torch.bincount(flat, minlength=n_out), 0, out=crow[1:])
    token_of_entry = torch.div(order, m, rounding_mode="floor")
    s_t = _csr(crow, token_of_entry, weights.reshape(-1)[order], (n_out, batch))
    return torch.sparse.mm(s_t, rows)


def gather_dot(indices: Tensor, table: Tensor, rows: Tensor) -> Tensor:
    """out[b, j] = table[indices[b, j]] . rows[b]: indices [batch, m], table [n, d], rows [batch, d].

    Returns [batch, m]: only the needed entries of rows @ table.T.
    """
    if rows.is_cuda:
        return gather_dot_bmm(indices, table, rows)
    return gather_dot_sddmm(indices, table, rows)


def gather_dot_bmm(indices: Tensor, table: Tensor, rows: Tensor) -> Tensor:
    """gather_dot by gathering the [batch, m, d] rows of table (the GPU form)."""
    return torch.bmm(table[indices], rows.unsqueeze(-1)).squeeze(-1)


def gather_dot_sddmm(indices: Tensor, table: Tensor, rows: Tensor) -> Tensor:
    """gather_dot as a sampled dense-dense matmul on a CSR pattern (the CPU form, no gather copy)."""
    batch, m = indices.shape
    crow = torch.arange(0, batch * m + 1, m, device=indices.device)
    pattern = _csr(crow, indices.reshape(-1), rows.new_zeros(batch * m), (batch, table.shape[0]))
    return torch.sparse.sampled_addmm(pattern, rows, table.t(), beta=0.0).values().reshape(batch, m)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
        ctx.save_for_backward(values, indices, W_dec)
        return F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        values, indices, W_dec = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = gather_dot(indices, W_dec, grad_out) if ctx.needs_input_grad[0] else None
        grad_W = scatter_outer(indices, values, grad_out, W_dec.shape[0]) if ctx.needs_input_grad[2] else None
        return grad_values, None, grad_W


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """sum_j values[b, j] * W_dec[indices[b, j]]: values, indices [batch, m], W_dec [n, d] -> [batch, d]."""
    return _SparseDecode.apply(values, indices, W_dec)


def _top_dead(pre: Tensor, dead_mask: Tensor, k_aux: int) -> tuple[Tensor, Tensor]:
    """The top min(k_aux, n_dead) pre-activations among dead latents: values, indices [batch, k_aux']."""
    dead_idx = torch.nonzero(dead_mask).squeeze(1)
    k_eff = min(k_aux, dead_idx.numel())
    if k_eff == 0:
        empty = pre.new_zeros(pre.shape[0], 0)
        return empty, empty.long()
    top = torch.topk(pre.index_select(1, dead_idx), k_eff, dim=1, sorted=False)
    return top.values, dead_idx[top.indices]


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, k: int, dead_mask: Tensor | None, k_aux: int,
                workspace: Tensor | None):
        # (x - b_dec) @ W_enc + b_enc without materialising x - b_dec: the one dense matmul
        # (addmm would first copy the broadcast bias into the output: slower on CPU than add_ after)
        if workspace is not None and workspace.dtype == x.dtype == W_enc.dtype:
            pre = torch.mm(x, W_enc, out=workspace)  # [batch, n_latents], memory kept from the last step
        else:
            pre = torch.mm(x, W_enc)  # [batch, n_latents]; bf16 under autocast
        # cast the bias first: adding an fp32 vector into bf16 takes a slow mixed-dtype path on CPU
        pre.add_((b_enc - b_dec @ W_enc).to(pre.dtype))
        top = torch.topk(pre, k, dim=1, sorted=True)
        values, indices = top.values.to(x.dtype).relu(), top.indices
        if dead_mask is None:
            aux_values, aux_indices = values[:, :0], indices[:, :0]
        else:
            aux_values, aux_indices = _top_dead(pre, dead_mask, k_aux)
        aux_values = aux_values.to(x.dtype).relu()  # as OpenAI's reference: AuxK values pass the ReLU too
        del pre, top
        gate = torch.cat([values, aux_values], 1) > 0  # where the ReLU passes gradient
        ctx.save_for_backward(x, b_dec, W_enc, gate, torch.cat([indices, aux_indices], 1))
        ctx.mark_non_differentiable(indices, aux_indices)
        return values, indices, aux_values, aux_indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, _gi, grad_aux: Tensor, _ga):
        x, b_dec, W_enc, gate, indices = ctx.saved_tensors
        grads = torch.cat([grad_values, grad_aux], 1) * gate
        n_latents = W_enc.shape[1]
        grad_x = grad_W = None
        # d loss / d b_enc[i] = sum of the gated grads at latent i; d pre / d b_dec = -W_enc per token
        grad_b = x.new_zeros(n_latents).index_add_(0, indices.reshape(-1), grads.reshape(-1))
        grad_b_dec = -(W_enc @ grad_b) if ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, W_enc.t().contiguous(), per_sample_weights=grads, mode="sum")
        if ctx.needs_input_grad[2]:
            # S.T @ (x - b_dec) = S.T @ x - (S.T @ 1) b_dec, and S.T @ 1 is grad_b
            grad_W = scatter_outer(indices, grads, x, n_latents).addr_(grad_b, b_dec, alpha=-1).t()
        return grad_x, grad_b_dec, grad_W, grad_b, None, None, None, None


def topk_encode(
    x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int,
    dead_mask: Tensor | None = None, k_aux: int = 0, workspace: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TopK-then-ReLU encoder with a sparse backward.

    x [batch, d] (normalised), b_dec [d] (subtracted first), W_enc [d, n], b_enc [n], dead_mask [n] bool.
    workspace: optional [batch, n] scratch for the dense pre-activations, overwritten (used when its dtype
    is x's, i.e. not under bf16 autocast); see `TopKSAE.pre_workspace` for why.
    Returns values, indices [batch, k] (descending) and the AuxK code aux_values, aux_indices
    [batch, min(k_aux, n_dead)] (post-ReLU; width 0 when dead_mask is None or nothing is dead).
    """
    return _TopKEncode.apply(x, b_dec, W_enc, b_enc, k, dead_mask, k_aux, workspace)


def dense_reference_decode(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """Dense version of sparse_decode (materialises [batch, n]); for tests."""
    dense = torch.zeros(values.shape[0], W_dec.shape[0], dtype=values.dtype, device=values.device)
    return dense.scatter_add(1, indices, values) @ W_dec  # duplicate indices add up


def dense_reference_encode(
    x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Dense version of topk_encode without AuxK; for tests."""
    top = torch.topk((x - b_dec) @ W_enc + b_enc, k, dim=1, sorted=True)
    return top.values.relu(), top.indices
