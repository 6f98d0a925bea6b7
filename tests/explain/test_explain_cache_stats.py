"""Sparse cache rows and streaming per-latent statistics against brute-force dense answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from fixtures.planted import PlantedRule, planted_corpus

from explain.latents.cache import LatentStatsAccumulator, LatentStatsConfig, sparse_activation_frame


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


def _top_partners(active: np.ndarray, m: int) -> list[list[int]]:
    """Brute force: per latent, the m latents sharing most tokens with it ([tokens, latents] bool)."""
    counts = active.T.astype(np.int64) @ active.astype(np.int64)
    np.fill_diagonal(counts, 0)
    out = []
    for row in counts:
        order = np.lexsort((np.arange(len(row)), -row))
        out.append([int(j) for j in order[:m] if row[j] > 0])
    return out


def test_cooccurrence_matches_brute_force_dense():
    n_latents = 16
    cfg = LatentStatsConfig(min_contexts=1, max_frequency=1.0, n_cooccurring=5, cooccurrence_probes=1000)
    acc = LatentStatsAccumulator(n_latents, cfg=cfg)
    tokens = []
    for ctx_ids, dense, valid in _random_batches(seed=5, n_latents=n_latents):
        values, indices = torch.from_numpy(dense).topk(n_latents, dim=-1)
        acc.update(sparse_activation_frame(torch.from_numpy(ctx_ids), values, indices, torch.from_numpy(valid)))
        tokens.append((dense > 0)[valid])
    stats = acc.finalize("sae", 1)
    assert stats.schema["cooccurring"] == pl.List(pl.Int32)
    assert stats["cooccurring"].to_list() == _top_partners(np.concatenate(tokens), 5)
    assert stats.filter(pl.col("latent") == 3)["cooccurring"].item().to_list() == []  # dead


def test_cooccurrence_sketch_keeps_planted_partners_in_bounded_memory():
    """300 latents, ~12 random ones per token; latent 2j+1 fires with 2j on 80 % of 2j's tokens.
    A sketch of 8 counters and 4 probes per latent and update still finds each planted partner."""
    rng = np.random.default_rng(0)
    n_latents, n_ctx, seq = 300, 64, 32
    dense = np.where(rng.random((n_ctx, seq, n_latents)) < 0.04, rng.uniform(0.1, 1, (n_ctx, seq, n_latents)), 0)
    leaders = dense[..., 0:20:2] > 0
    dense[..., 1:20:2] = np.where(leaders & (rng.random(leaders.shape) < 0.8), 1.0, dense[..., 1:20:2])
    cfg = LatentStatsConfig(n_cooccurring=3, cooccurrence_sketch=8, cooccurrence_probes=4)
    acc = LatentStatsAccumulator(n_latents, cfg=cfg)
    for lo in range(0, n_ctx, 8):
        values, indices = torch.from_numpy(dense[lo:lo + 8].astype(np.float32)).topk(40, dim=-1)
        acc.update(sparse_activation_frame(torch.arange(lo, lo + 8), values, indices, torch.ones(8, seq, dtype=bool)))
    assert acc.cooccurrence.count.shape == (n_latents, 8)
    top = acc.finalize("sae", n_ctx * seq)["cooccurring"].to_list()
    for leader in range(0, 20, 2):
        assert top[leader][0] == leader + 1, (leader, top[leader])
        assert top[leader + 1][0] == leader, (leader + 1, top[leader + 1])
    assert all(len(row) <= 3 for row in top)


def test_cooccurrence_off_gives_empty_lists():
    corpus = planted_corpus({0: PlantedRule(("w1",)), 1: PlantedRule(("w1",))}, n_latents=3)
    on, off = LatentStatsAccumulator(3), LatentStatsAccumulator(3, cfg=LatentStatsConfig(n_cooccurring=0))
    for frame in corpus.frames():
        on.update(frame)
        off.update(frame)
    assert on.finalize("s", corpus.n_tokens)["cooccurring"].to_list() == [[1], [0], []]
    assert off.finalize("s", corpus.n_tokens)["cooccurring"].to_list() == [[], [], []]
    assert off.cooccurrence is None
