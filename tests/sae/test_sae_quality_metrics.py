"""SAE quality metrics on known answers: identity splices, a planted probe latent, one-logit ablations."""

import numpy as np
import pytest
import torch
from torch import nn

from sae.ablation import ablation_sparsity, sparsity
from sae.config import SAEConfig
from sae.downstream import downstream_loss
from sae.embedding_loss import embedding_similarity
from sae.evaluate import contributions, heldout_metrics
from sae.model import TopKSAE
from sae.probes import dense_correlation, probe_losses, sparse_correlation

pytestmark = pytest.mark.usefixtures("one_thread")


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


def test_identity_reconstruction_gives_zero_delta_ce_and_full_recovery():
    model, ids = _gpt2(), torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    result = downstream_loss(model, ids, layer=0, reconstruct=lambda x: x, zero_ablation=True)
    assert result["delta_ce"] == pytest.approx(0, abs=1e-5)
    assert result["kl"] == pytest.approx(0, abs=1e-5)
    assert result["loss_recovered"] == pytest.approx(1, abs=1e-4)
    noisy = downstream_loss(model, ids, 0, lambda x: x + torch.randn_like(x), zero_ablation=True)
    assert noisy["kl"] > 0.001 and abs(noisy["delta_ce"]) > 1e-4  # a random LM: CE may move either way


def _bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    return BertModel(cfg).eval()


def test_identity_reconstruction_gives_embedding_cosine_one():
    model = _bert()
    ids = torch.randint(5, 50, (3, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # one padded sentence
    content = torch.zeros_like(ids, dtype=torch.bool)
    content[:, 1:6] = True
    result = embedding_similarity(model, ids, mask, content, layer=0, reconstruct=lambda x: x)
    assert result["embed_cosine"] == pytest.approx(1, abs=1e-5)
    assert result["embed_cosine_zero"] < 0.999
    assert result["embed_recovered"] == pytest.approx(1, abs=1e-4)
    worse = embedding_similarity(model, ids, mask, content, 0, lambda x: x + 3 * torch.randn_like(x))
    assert worse["embed_cosine"] < 0.999


def test_a_latent_aligned_with_a_binary_feature_has_probe_loss_near_zero():
    gen = np.random.default_rng(0)
    n, k, n_latents = 4000, 4, 256
    y = gen.random(n) < 0.3
    indices = torch.stack([torch.from_numpy(gen.choice(np.arange(8, n_latents), k, replace=False)) for _ in range(n)])
    values = torch.from_numpy(gen.uniform(0.1, 1.0, (n, k))).float()
    indices[:, 0] = torch.where(torch.from_numpy(y), 7, indices[:, 0])  # latent 7 fires exactly on positives
    values[:, 0] = torch.where(torch.from_numpy(y), 2.0 + values[:, 0], values[:, 0])
    residual = gen.normal(size=(n, 16)).astype(np.float32)
    out = probe_losses(values, indices, n_latents, residual, {"planted": y}, candidates=4)["planted"]
    assert out["latent"] == 7 and out["ce"] < 0.02
    assert out["ce_residual"] == pytest.approx(out["prior_ce"], abs=0.01)  # noise channels: no better than the prior


def test_sparse_correlation_matches_numpy_on_the_dense_code():
    gen = np.random.default_rng(1)
    values, indices = torch.rand(500, 3).double(), torch.from_numpy(gen.integers(0, 20, (500, 3)))
    indices = torch.sort(indices, 1).values
    indices[:, 1] = torch.where(indices[:, 1] == indices[:, 0], (indices[:, 0] + 1) % 20, indices[:, 1])
    indices[:, 2] = torch.where((indices[:, 2] == indices[:, 0]) | (indices[:, 2] == indices[:, 1]),
                                (indices[:, 1] + 1) % 20, indices[:, 2])
    ok = (indices[:, 0] != indices[:, 1]) & (indices[:, 1] != indices[:, 2]) & (indices[:, 0] != indices[:, 2])
    values, indices = values[ok], indices[ok]
    dense = torch.zeros(len(values), 20, dtype=torch.float64).scatter_(1, indices, values).numpy()
    y = gen.random(len(values)) < 0.4
    assert np.allclose(sparse_correlation(values, indices, 20, y), dense_correlation(dense, y.astype(float)))


class _OneBlock(nn.Module):
    """embedding -> one position-wise block -> linear head: an edit at position p moves only logits at p."""

    def __init__(self, vocab: int, d: int, head: torch.Tensor):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.Linear(d, d)
        with torch.no_grad():
            self.block.weight.copy_(torch.eye(d))
            self.block.bias.zero_()
        self.head = nn.Linear(d, vocab, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(head)

    def forward(self, input_ids):
        return self.head(self.block(self.emb(input_ids)))


def test_an_ablation_that_changes_one_logit_has_the_minimal_sparsity():
    vocab, d, horizon = 10, 4, 16
    head = torch.zeros(vocab, d)
    head[3, 0] = 1.0  # only logit 3 reads residual dimension 0
    model = _OneBlock(vocab, d, head)
    ids = torch.randint(0, vocab, (1, 20), generator=torch.Generator().manual_seed(0))

    def one_latent(x):  # a single active latent writing 0.5 along dimension 0
        return torch.tensor([0]), torch.tensor([[0.5, 0, 0, 0]])

    value = ablation_sparsity(model, model.block, ids, [(0, 2)], one_latent, horizon)
    assert value == pytest.approx(1 / (vocab * horizon))
    dense = _OneBlock(vocab, d, torch.zeros(vocab, d).index_fill_(1, torch.tensor([0]), 1.0))
    assert ablation_sparsity(dense, dense.block, ids, [(0, 2)], one_latent, horizon) == pytest.approx(1 / horizon)
    assert sparsity(torch.ones(7, 3)) == pytest.approx(1.0)


def test_contributions_sum_to_the_reconstruction_minus_bias():
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=8, n_latents=32, k=4)).eval()
    x = torch.randn(8) * 3 + 1
    _ids, terms = contributions(sae)(x)
    mu, std = sae.input_stats(x[None])
    x_hat = sae(x[None]).x_hat[0]
    assert torch.allclose(terms.sum(0), x_hat - (sae.b_dec * std[0] + mu[0]), atol=1e-5)


def test_heldout_metrics_match_a_brute_force_count():
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=8, n_latents=64, k=2, normalize_activations="none")).eval()
    x = torch.randn(300, 8)
    out = heldout_metrics(sae, x.numpy(), batch_size=300)
    values, indices = sae.encode(x)
    fired = set(indices[values > 0].tolist())
    assert out["dead_frac"] == pytest.approx(1 - len(fired) / 64)
    with torch.no_grad():
        err = (x - sae(x).x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert out["fvu_heldout"] == pytest.approx(float(err), rel=1e-5)
    assert out["l0"] == pytest.approx(float((values > 0).sum(1).float().mean()))


def test_causal_lm_metrics_through_the_stage_helpers(tmp_path):
    """A tiny GPT-2 saved to a folder: the stage reloads it with its LM head, splices an SAE, ablates latents."""
    from transformers import GPT2Model

    from flows.config import RunConfig
    from flows.stages.sae_model_metrics import causal_metrics, is_causal
    from sae.data.subject import SubjectModel

    lm = _gpt2()
    lm.save_pretrained(tmp_path / "gpt2")
    subject = SubjectModel(model=GPT2Model.from_pretrained(tmp_path / "gpt2").eval(), tokenizer=None, name="tiny",
                           source_dir=tmp_path / "gpt2")
    assert is_causal(subject)
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=32, n_latents=64, k=4)).eval()
    row, notes = {}, []
    contexts = torch.randint(0, 64, (4, 20), generator=torch.Generator().manual_seed(3)).tolist()
    causal_metrics(RunConfig(sae_eval={"ablation_positions": 3}), subject, 0, sae, contexts, row, notes)
    assert notes == [] and row["kl"] > 0 and row["delta_ce"] == row["delta_ce"]
    assert 1 / (64 * 16) <= row["ablation_sparsity"] <= 1
