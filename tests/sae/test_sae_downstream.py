"""Downstream loss on a tiny random GPT-2: identity reconstruction costs nothing, zeroing costs a lot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from sae.downstream import downstream_loss


@pytest.fixture(scope="module")
def gpt2():
    # A large init scale makes the random model confident, so its own greedy continuations have a low
    # CE that destroying the residual stream visibly raises (a default-init model is near uniform).
    torch.manual_seed(0)
    config = GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=32, vocab_size=50,
                        bos_token_id=0, eos_token_id=0, initializer_range=0.3)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def token_ids(gpt2):
    """[6, 12] greedy continuations of random first tokens: text the model predicts well."""
    ids = torch.randint(0, 50, (6, 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(11):
            ids = torch.cat([ids, gpt2(ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids


def test_identity_reconstruction_changes_nothing(gpt2, token_ids):
    result = downstream_loss(gpt2, token_ids, layer=1, reconstruct=lambda x: x, batch_size=4)
    assert result["delta_ce"] == pytest.approx(0.0, abs=1e-6)
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)
    assert result["n_predictions"] == 6 * 11
    with torch.no_grad():
        logits = gpt2(token_ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 50), token_ids[:, 1:].reshape(-1))
    assert result["ce_clean"] == pytest.approx(float(expected), rel=1e-5)


def test_zero_reconstruction_hurts(gpt2, token_ids):
    result = downstream_loss(gpt2, token_ids, layer=1, reconstruct=torch.zeros_like, zero_ablation=True)
    assert result["delta_ce"] > 1.0 and result["kl"] > 0.5
    assert result["ce_zero"] == pytest.approx(result["ce_patched"], rel=1e-6)
    assert result["loss_recovered"] == pytest.approx(0.0, abs=1e-6)


def test_noisy_reconstruction_sits_between(gpt2, token_ids):
    noise = torch.Generator().manual_seed(2)
    result = downstream_loss(gpt2, token_ids, layer=2, zero_ablation=True,
                             reconstruct=lambda x: x + 0.05 * torch.randn(x.shape, generator=noise))
    assert 0 < result["kl"] < 0.01 and 0.99 < result["loss_recovered"] < 1.01


def test_padding_is_ignored(gpt2, token_ids):
    mask = torch.ones_like(token_ids)
    mask[0, 8:] = 0
    padded = token_ids.clone()
    padded[0, 8:] = 7
    seen = []

    def recording_identity(x):
        seen.append(len(x))
        return x

    result = downstream_loss(gpt2, padded, 0, recording_identity, attention_mask=mask)
    assert seen == [int(mask.sum())]  # only real tokens are passed to the reconstruction
    assert result["n_predictions"] == 6 * 11 - 4
    assert result["delta_ce"] == pytest.approx(0.0, abs=1e-6)


def test_bad_layer(gpt2, token_ids):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.2"):
        downstream_loss(gpt2, token_ids, 3, lambda x: x)
