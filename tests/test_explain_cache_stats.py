"""Sparse cache rows and streaming per-latent statistics against brute-force dense answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from explain.latent_cache import LatentStatsAccumulator, LatentStatsConfig, sparse_activation_frame
from explain.planted import PlantedRule, planted_corpus


def test_sparse_frame_keeps_only_positive_valid_entries():
    values = torch.tensor([[[2.0, 0.0], [1.0, 0.5]], [[3.0, 0.0], [4.0, 0.0]]])
    indices = torch.tensor([[[7, 1], [2, 7]], [[0, 5], [3, 4]]])
    valid = torch.tensor([[True, True], [True, False]])
    frame = sparse_activation_frame(torch.tensor([10, 11]), values, indices, valid)
    assert frame.schema == {"ctx_id": pl.Int64, "pos": pl.Int32, "latent": pl.Int32, "value": pl.Float32}
    assert frame.rows() == [(10, 0, 7, 2.0), (10, 1, 2, 1.0), (10, 1, 7, 0.5), (11, 0, 0, 3.0)]


def test_sparse_frame_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        sparse_activation_frame(np.zeros(2), np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), np.ones((2, 3)))


def _random_batches(seed: int = 0, n_batches: int = 6, batch: int = 8, seq: int = 12, n_latents: int = 16):
    """Dense random codes (about 10 % non-zero) with right padding; yields (ctx_ids, dense, valid)."""
    rng = np.random.default_rng(seed)
    for b in range(n_batches):
        dense = np.maximum(rng.normal(size=(batch, seq, n_latents)) - 1.3, 0).astype(np.float32)
        dense[..., 3] *= 0  # a dead latent
        lengths = rng.integers(seq // 2, seq + 1, size=batch)
        valid = np.arange(seq)[None, :] < lengths[:, None]
        yield np.arange(b * batch, (b + 1) * batch), dense, valid


def test_stats_match_brute_force_dense():
    n_latents, k = 16, 16
    acc = LatentStatsAccumulator(n_latents)
    all_dense, all_valid = [], []
    for ctx_ids, dense, valid in _random_batches(n_latents=n_latents):
        values, indices = torch.from_numpy(dense).topk(k, dim=-1)
        acc.update(sparse_activation_frame(torch.from_numpy(ctx_ids), values, indices, torch.from_numpy(valid)))
        all_dense.append(dense * valid[..., None])
        all_valid.append(valid)
    dense = np.concatenate(all_dense)
    n_tokens = int(np.concatenate(all_valid).sum())
    stats = acc.finalize("sae", n_tokens, LatentStatsConfig(min_contexts=1, max_frequency=1.0))
    active = dense > 0
    n_active = active.sum(axis=(0, 1))
    assert stats["n_active"].to_list() == n_active.tolist()
    assert stats["n_contexts"].to_list() == active.any(axis=1).sum(axis=0).tolist()
    np.testing.assert_allclose(stats["frequency"].to_numpy(), n_active / n_tokens)
    np.testing.assert_allclose(stats["max_act"].to_numpy(), dense.max(axis=(0, 1)), rtol=1e-6)
    mean = dense.sum(axis=(0, 1)) / np.maximum(n_active, 1)
    np.testing.assert_allclose(stats["mean_act"].to_numpy(), mean, rtol=1e-5)
    assert stats.filter(pl.col("latent") == 3)["status"].item() == "dead"
    _check_deciles(stats, dense.max(axis=1))


def _check_deciles(stats: pl.DataFrame, ctx_max: np.ndarray) -> None:
    """Each interior decile edge splits the latent's context maxima at about the right rank."""
    for latent, edges in zip(stats["latent"].to_list(), stats["decile_edges"].to_list(), strict=True):
        values = ctx_max[:, latent][ctx_max[:, latent] > 0]
        if len(values) < 20:
            continue
        assert edges[0] == pytest.approx(values.min(), rel=1e-6)
        assert edges[-1] == pytest.approx(values.max(), rel=1e-6)
        assert all(a <= b for a, b in zip(edges, edges[1:], strict=False))
        for i, edge in enumerate(edges[1:-1], start=1):
            assert abs((values <= edge).mean() - i / 10) <= 0.1


def test_statuses_are_recorded_with_reasons():
    rules = {0: PlantedRule(("w1",))}
    corpus = planted_corpus(rules, n_latents=5, dense_latents=(1,), rare_latents=(2,))
    acc = LatentStatsAccumulator(5)
    for frame in corpus.frames():
        acc.update(frame)
    stats = acc.finalize("sae", corpus.n_tokens, LatentStatsConfig(min_contexts=10, max_frequency=0.2))
    assert stats.height == 5
    by_latent = {row["latent"]: row for row in stats.iter_rows(named=True)}
    assert by_latent[0]["status"] == "ok" and by_latent[0]["reason"] == ""
    assert by_latent[1]["status"] == "too_dense" and "max_frequency" in by_latent[1]["reason"]
    assert by_latent[2]["status"] == "too_few" and "3 contexts" in by_latent[2]["reason"]
    assert by_latent[3]["status"] == "dead" and by_latent[3]["reason"]
    assert by_latent[4]["status"] == "dead"


def test_frame_order_does_not_change_stats():
    corpus = planted_corpus({0: PlantedRule(("w1", "w2")), 1: PlantedRule(("w3",))}, n_latents=2)
    frames = corpus.frames(batch_size=16)
    forward, backward = LatentStatsAccumulator(2), LatentStatsAccumulator(2)
    for frame in frames:
        forward.update(frame)
    for frame in reversed(frames):
        backward.update(frame)
    assert forward.finalize("s", corpus.n_tokens).equals(backward.finalize("s", corpus.n_tokens))
