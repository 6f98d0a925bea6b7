"""FVU, the one definition (sae.metrics): float, differentiable loss and pooled accumulator, each checked
against a direct numpy computation; the training loss and the training stats use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae.config import SAEConfig
from sae.metrics import FVUAccumulator, fvu, fvu_loss, squared_error_and_deviation
from sae.model import TopKSAE


def numpy_fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def batch(seed: int, n: int = 50, d: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    return x, x + torch.randn(n, d, generator=g, dtype=torch.float64)


def test_fvu_matches_numpy_and_takes_truth_first():
    x, x_hat = batch(0)
    expected = numpy_fvu(x.numpy(), x_hat.numpy())
    assert fvu(x, x_hat) == pytest.approx(expected, rel=1e-12)
    assert float(fvu_loss(x, x_hat)) == pytest.approx(expected, rel=1e-12)
    # (truth, prediction): the variance is the truth's, so swapping the arguments changes the answer
    assert fvu(x_hat, x) == pytest.approx(numpy_fvu(x_hat.numpy(), x.numpy()), rel=1e-12)
    assert fvu(x_hat, x) != pytest.approx(expected, rel=1e-3)
    error, deviation = squared_error_and_deviation(x, x_hat)
    assert float(error) == pytest.approx(((x - x_hat) ** 2).sum().item())
    assert float(deviation) == pytest.approx(((x - x.mean(0)) ** 2).sum().item())


def test_fvu_known_answers_and_constant_inputs():
    x, _ = batch(1)
    assert fvu(x, x) == 0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    constant = torch.ones(4, 3)
    assert np.isnan(fvu(constant, constant))  # no variance: undefined
    assert float(fvu_loss(constant, constant)) == 0  # the loss treats 0/0 as 0


def test_fvu_loss_gradient_flows_to_the_prediction_only():
    x, x_hat = batch(2)
    x, x_hat = x.requires_grad_(), x_hat.clone().requires_grad_()
    fvu_loss(x, x_hat).backward()
    deviation = ((x.detach() - x.detach().mean(0)) ** 2).sum()
    torch.testing.assert_close(x_hat.grad, 2 * (x_hat.detach() - x.detach()) / deviation)
    # the error term's gradient reaches x too, but not through the (constant) deviation
    torch.testing.assert_close(x.grad, -x_hat.grad)


def test_accumulator_pools_error_and_per_batch_deviation():
    batches = [batch(seed, n=n) for seed, n in ((3, 20), (4, 35), (5, 9))]
    acc = FVUAccumulator()
    assert np.isnan(acc.value())
    for x, x_hat in batches:
        acc.add(x, x_hat)
    arrays = [(x.numpy(), x_hat.numpy()) for x, x_hat in batches]
    error = sum(((x - x_hat) ** 2).sum() for x, x_hat in arrays)
    deviation = sum(((x - x.mean(0)) ** 2).sum() for x, _ in arrays)  # each batch around its own mean
    assert acc.value() == pytest.approx(error / deviation, rel=1e-12)
    one = FVUAccumulator()
    one.add(*batches[0])
    assert one.value() == pytest.approx(fvu(*batches[0]), rel=1e-12)


def test_training_recon_loss_is_the_batch_fvu_in_normalised_space():
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=16, n_latents=32, k=4, normalize_activations="layer_norm")).eval()
    x = torch.randn(64, 16) * 2 + 0.3
    with torch.no_grad():
        out = sae(x)
    x_n, stats = sae.normalize(x)
    x_hat_n = (out.x_hat - stats[0]) / stats[1]
    assert out.recon_loss.item() == pytest.approx(numpy_fvu(x_n.numpy(), x_hat_n.numpy()), rel=1e-4)
