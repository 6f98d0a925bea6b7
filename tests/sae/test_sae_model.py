"""TopKSAE model and metrics: contract shapes, normalisation, known-answer encodings and losses."""

import pytest
import torch

from sae.config import SAEConfig, TrainConfig
from sae.metrics import dead_fraction, fvu, l0, latent_fire_counts, normalized_mse
from sae.model import TopKSAE, batch_topk_mask, geometric_median

pytestmark = pytest.mark.usefixtures("one_thread")


def _sae(**overrides) -> TopKSAE:
    torch.manual_seed(0)
    return TopKSAE(SAEConfig(**{"d_in": 8, "n_latents": 32, "k": 4, **overrides}))


def test_parameters_follow_the_saelens_contract():
    sae = _sae()
    shapes = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    assert shapes == {"W_enc": (8, 32), "b_enc": (32,), "W_dec": (32, 8), "b_dec": (8,)}
    assert set(sae.state_dict()) == set(shapes), "training counters must not leak into saved weights"


def test_init_is_tied_with_unit_norm_decoder_rows():
    sae = _sae()
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32))
    assert not sae.b_enc.any() and not sae.b_dec.any()


def test_layer_norm_is_saelens_formula_and_affine_invariant():
    sae = _sae(normalize_activations="layer_norm")
    x = torch.randn(5, 8) * 4 + 2
    x_n, (mu, std) = sae.normalize(x)
    centred = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(x_n, centred / (centred.std(-1, keepdim=True) + 1e-5))
    torch.testing.assert_close(mu, x.mean(-1, keepdim=True))
    # the code of a token does not depend on its offset or scale
    values, indices = sae.encode(x)
    values2, indices2 = sae.encode(3 * x - 7)
    assert torch.equal(indices, indices2)
    torch.testing.assert_close(values, values2, atol=1e-4, rtol=1e-4)


def test_decode_returns_raw_space_and_needs_stats_for_layer_norm():
    sae = _sae(normalize_activations="layer_norm").eval()
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(6, 8) * 5 + 3
    values, indices = sae.encode(x)
    x_hat = sae.decode(values, indices, sae.input_stats(x))
    torch.testing.assert_close(x_hat, sae(x).x_hat)
    _, (mu, std) = sae.normalize(x)
    x_hat_n = (torch.zeros(6, 32).scatter(1, indices, values) @ sae.W_dec) + sae.b_dec
    torch.testing.assert_close(x_hat, x_hat_n * std + mu)
    with pytest.raises(ValueError, match="stats"):
        sae.decode(values, indices)


def test_identity_dictionary_reconstructs_exactly():
    """W_dec = [I; -I] with k = d: the positive half of [x, -x] rebuilds any x exactly."""
    sae = TopKSAE(SAEConfig(d_in=8, n_latents=16, k=8, normalize_activations="none")).eval()
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([torch.eye(8), -torch.eye(8)]))
        sae.W_enc.copy_(sae.W_dec.T)
    x = torch.randn(10, 8)
    values, indices = sae.encode(x)
    assert (values > 0).all()
    torch.testing.assert_close(sae.decode(values, indices), x)
    assert fvu(x, sae(x).x_hat) < 1e-10


def test_geometric_median_of_collinear_points_is_the_median():
    direction = torch.tensor([1.0, 2.0, 2.0]) / 3
    points = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0])[:, None] * direction
    torch.testing.assert_close(geometric_median(points, iters=200), 2 * direction, atol=1e-3, rtol=0)


def test_init_b_dec_uses_normalised_geometric_median():
    sae = _sae(normalize_activations="none")
    sample = torch.randn(200, 8) + 5
    sae.init_b_dec(sample)
    torch.testing.assert_close(sae.b_dec.detach(), geometric_median(sample))


def test_parallel_gradient_component_is_removed():
    sae = _sae()
    sae.W_dec.grad = torch.randn(32, 8)
    before = sae.W_dec.grad.clone()
    sae.remove_parallel_decoder_grad()
    along = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert along.abs().max() < 1e-6
    expected = before - (before * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
    torch.testing.assert_close(sae.W_dec.grad, expected.detach())


def test_aux_loss_is_zero_without_dead_latents_and_positive_with_them():
    sae = _sae(dead_tokens=100).train()
    x = torch.randn(16, 8)
    assert sae(x).aux_loss == 0
    sae.tokens_since_fired[:] = 1000
    out = sae(x)
    assert out.aux_loss > 0
    torch.testing.assert_close(out.loss, out.recon_loss + out.aux_loss / 32)


def test_multi_topk_adds_an_eighth_of_the_4k_loss():
    sae = _sae(multi_topk=True, aux_coef=0.0).train()
    out = sae(torch.randn(16, 8))
    assert out.values.shape == (16, 4) and out.multi_topk_loss > 0
    torch.testing.assert_close(out.loss, out.recon_loss + out.multi_topk_loss / 8)


def test_batch_topk_keeps_batch_times_k_entries_unevenly():
    values = torch.rand(6, 12) ** 3
    values[0] += 10  # token 0 holds the largest values: it gets more than k
    kept = batch_topk_mask(values, k=3)
    assert int((kept > 0).sum()) == 6 * 3
    assert int((kept[0] > 0).sum()) == 12
    sae = _sae(batch_topk=True).train()
    out = sae(torch.randn(16, 8))
    assert out.values.shape == (16, 16) and int((out.values > 0).sum()) <= 16 * 4


def test_metrics_known_answers():
    x = torch.randn(50, 4)
    assert fvu(x, x) == 0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert normalized_mse(x, torch.zeros_like(x)) == pytest.approx(1.0)
    assert normalized_mse(x, x / 2) == pytest.approx(0.25)
    values = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    indices = torch.tensor([[0, 1], [1, 2]])
    assert l0(values) == 1.5
    counts = latent_fire_counts(values, indices, 4)
    assert counts.tolist() == [1, 1, 1, 0]
    assert dead_fraction(counts) == 0.25


def test_configs_validate_and_scale_the_learning_rate():
    from sae.config import LR_BASE, LR_BASE_D_IN

    assert TrainConfig().resolved_lr(2**14, LR_BASE_D_IN) == pytest.approx(LR_BASE)
    assert TrainConfig().resolved_lr(2**12, LR_BASE_D_IN) == pytest.approx(2 * LR_BASE)
    assert TrainConfig().resolved_lr(2**14, 4 * LR_BASE_D_IN) == pytest.approx(LR_BASE / 2)
    assert TrainConfig(lr=1e-3).resolved_lr(2**12, 64) == 1e-3
    assert SAEConfig(d_in=4, n_latents=8, k=2).k_aux_clamped == 8
    with pytest.raises(ValueError):
        SAEConfig(d_in=4, n_latents=8, k=9)
    with pytest.raises(ValueError):
        SAEConfig(d_in=4, n_latents=8, k=2, normalize_activations="constant_norm_rescale")


def test_the_decoder_learns_at_its_own_multiple_of_the_scheduled_lr():
    from sae.train import make_optimizer, make_scheduler

    sae = TopKSAE(SAEConfig(d_in=4, n_latents=8, k=2))
    cfg = TrainConfig(lr=1e-3, decoder_lr_scale=3.0, tokens=10, batch_size=1, decay_frac=0.5)
    opt = make_optimizer(sae, cfg)
    grouped = [[id(p) for p in g["params"]] for g in opt.param_groups]
    assert grouped[0] == [id(sae.W_dec)]
    assert sorted(grouped[0] + grouped[1]) == sorted(id(p) for p in sae.parameters())  # each exactly once
    sched = make_scheduler(opt, cfg)
    for _ in range(7):  # into the decay (steps 5-9): factor (10 - 7) / 5
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-3 * 0.6, 1e-3 * 0.6])
