"""Sparse SAE kernels against dense references: same outputs, same gradients (float64)."""

import pytest
import torch

from sae.kernels import (
    dense_reference_decode,
    dense_reference_encode,
    gather_dot_bmm,
    gather_dot_sddmm,
    scatter_outer_csr,
    scatter_outer_index_add,
    sparse_decode,
    topk_encode,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _indices_with_duplicates(batch: int, m: int, n: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, n, (batch, m), generator=gen)
    idx[0, 1] = idx[0, 0]  # duplicate latent within a token must add up
    return idx


@pytest.mark.parametrize("form", [scatter_outer_csr, scatter_outer_index_add])
def test_scatter_outer_equals_dense_transpose_product(form):
    gen = torch.Generator().manual_seed(0)
    batch, m, n, d = 9, 5, 13, 7
    idx = _indices_with_duplicates(batch, m, n, gen)
    weights, rows = torch.randn(batch, m, generator=gen, dtype=F64), torch.randn(batch, d, generator=gen, dtype=F64)
    dense = torch.zeros(batch, n, dtype=F64).index_put_(
        (torch.arange(batch).repeat_interleave(m), idx.reshape(-1)), weights.reshape(-1), accumulate=True
    )
    torch.testing.assert_close(form(idx, weights, rows, n), dense.T @ rows)


@pytest.mark.parametrize("form", [gather_dot_sddmm, gather_dot_bmm])
def test_gather_dot_equals_dense_product_at_indices(form):
    gen = torch.Generator().manual_seed(1)
    batch, m, n, d = 9, 5, 13, 7
    idx = _indices_with_duplicates(batch, m, n, gen)
    table, rows = torch.randn(n, d, generator=gen, dtype=F64), torch.randn(batch, d, generator=gen, dtype=F64)
    torch.testing.assert_close(form(idx, table, rows), (rows @ table.T).gather(1, idx))


def test_sparse_decode_forward_and_grads_match_dense():
    gen = torch.Generator().manual_seed(2)
    batch, m, n, d = 6, 4, 11, 5
    idx = _indices_with_duplicates(batch, m, n, gen)
    values = torch.rand(batch, m, generator=gen, dtype=F64).requires_grad_()
    W = torch.randn(n, d, generator=gen, dtype=F64).requires_grad_()
    upstream = torch.randn(batch, d, generator=gen, dtype=F64)
    out = sparse_decode(values, idx, W)
    grads = torch.autograd.grad(out, (values, W), upstream)
    ref = dense_reference_decode(values, idx, W)
    ref_grads = torch.autograd.grad(ref, (values, W), upstream)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda v, w: sparse_decode(v, idx, w), (values, W))


def _encode_inputs(gen, batch=6, d=5, n=12):
    x = torch.randn(batch, d, generator=gen, dtype=F64).requires_grad_()
    b_dec = torch.randn(d, generator=gen, dtype=F64).requires_grad_()
    W_enc = torch.randn(d, n, generator=gen, dtype=F64).requires_grad_()
    b_enc = (torch.randn(n, generator=gen, dtype=F64) - 2.5).requires_grad_()  # some selected values < 0
    return x, b_dec, W_enc, b_enc


def test_topk_encode_matches_dense_values_indices_and_grads():
    gen = torch.Generator().manual_seed(3)
    params = _encode_inputs(gen)
    values, indices, _, _ = topk_encode(*params, k=3)
    ref_values, ref_indices = dense_reference_encode(*params, k=3)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(values, ref_values)
    assert (values == 0).any(), "test should cover the ReLU gate on a selected negative pre-activation"
    upstream = torch.randn(values.shape, generator=gen, dtype=F64)
    grads = torch.autograd.grad(values, params, upstream)
    ref_grads = torch.autograd.grad(ref_values, params, upstream)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_topk_encode_gradcheck():
    gen = torch.Generator().manual_seed(4)
    params = _encode_inputs(gen, batch=3, d=4, n=8)
    assert torch.autograd.gradcheck(lambda *p: topk_encode(*p, k=3)[0], params)


def test_aux_code_is_top_dead_latents_and_grads_match_dense():
    gen = torch.Generator().manual_seed(5)
    params = _encode_inputs(gen, batch=6, d=5, n=12)
    x, b_dec, W_enc, b_enc = params
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[0, 3, 4, 7, 9, 11]] = True
    values, indices, aux_values, aux_indices = topk_encode(*params, k=3, dead_mask=dead, k_aux=4)
    pre = (x - b_dec) @ W_enc + b_enc
    ref_top = torch.topk(pre.masked_fill(~dead, float("-inf")), 4, dim=1)
    assert torch.equal(aux_indices.sort(1).values, ref_top.indices.sort(1).values)
    ref_aux = ref_top.values.relu()
    torch.testing.assert_close(aux_values.sort(1).values, ref_aux.sort(1).values)
    # a loss that uses both codes: gradients must equal the dense (masked) computation
    up_main, up_aux = torch.randn(6, 3, generator=gen, dtype=F64), torch.randn(6, 12, generator=gen, dtype=F64)
    loss = (values * up_main).sum() + (aux_values * up_aux.gather(1, aux_indices)).sum()
    ref_main = torch.topk(pre, 3, dim=1).values.relu()
    ref_loss = (ref_main * up_main).sum() + (ref_aux * up_aux.gather(1, ref_top.indices)).sum()
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params), strict=True):
        torch.testing.assert_close(got, want)


def test_aux_code_is_empty_without_dead_latents():
    params = _encode_inputs(torch.Generator().manual_seed(6))
    no_dead = torch.zeros(12, dtype=torch.bool)
    _, _, aux_values, aux_indices = topk_encode(*params, k=3, dead_mask=no_dead, k_aux=4)
    assert aux_values.shape == (6, 0) and aux_indices.shape == (6, 0)
    _, _, aux_values, _ = topk_encode(*params, k=3, dead_mask=~no_dead, k_aux=40)  # clamped to n_dead
    assert aux_values.shape == (6, 12)
