"""Sampling on planted latents: disjoint splits, verified and hard negatives, deciles, de-duplication."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fixtures.planted import PlantedCorpus, PlantedRule, make_vocab, plant

from explain.latents.cache import LatentStatsAccumulator, LatentStatsConfig
from explain.records import build_latent_records
from explain.sampling.examples import SamplingConfig, sample_examples

RULES = {
    0: PlantedRule(("w1", "w2")),
    1: PlantedRule(("w3",)),
    2: PlantedRule(("w7",), after="w8"),
}
N_LATENTS = 6  # 3: dense, 4: rare, 5: dead


def _sample(corpus: PlantedCorpus, cfg: SamplingConfig, batch_size: int = 32) -> tuple[pl.DataFrame, pl.DataFrame]:
    frames = corpus.frames(batch_size=batch_size)
    acc = LatentStatsAccumulator(N_LATENTS)
    for frame in frames:
        acc.update(frame)
    stats = acc.finalize("sae", corpus.n_tokens, LatentStatsConfig(min_contexts=5, max_frequency=0.2))
    examples = sample_examples(pl.concat(frames).lazy(), corpus.contexts(), stats, cfg, "sae")
    return examples, stats


@pytest.fixture(scope="module")
def corpus() -> PlantedCorpus:
    token_ids = np.random.default_rng(1).integers(0, 40, size=(800, 32))
    # 25 identical copies of one context holding both of latent 0's tokens: duplicate windows.
    token_ids[0:26] = token_ids[0]
    token_ids[0:26, 10], token_ids[0:26, 20] = 1, 2
    return plant(token_ids, make_vocab(40), RULES, N_LATENTS, dense_latents=(3,), rare_latents=(4,), seed=2)


@pytest.fixture(scope="module")
def sampled(corpus: PlantedCorpus) -> tuple[pl.DataFrame, pl.DataFrame]:
    return _sample(corpus, SamplingConfig(seed=3, window=16, peak_offset=10, batch_rows=3000, score_random=20))


def test_only_ok_latents_are_sampled(sampled):
    examples, stats = sampled
    ok = set(stats.filter(pl.col("status") == "ok")["latent"].to_list())
    assert ok == {0, 1, 2}
    assert set(examples["latent"].unique().to_list()) == ok


def test_explain_and_score_share_no_context(sampled):
    examples, _ = sampled
    per_pair = examples.group_by(["latent", "ctx_id"]).agg(pl.col("split").n_unique().alias("n"))
    assert per_pair["n"].max() == 1
    assert examples.filter(pl.col("split") == "score").height > 0


def test_windows_and_acts_match_ground_truth(sampled, corpus):
    examples, _ = sampled
    for row in examples.iter_rows(named=True):
        truth = corpus.acts[row["ctx_id"], row["start"]:row["start"] + len(row["acts"]), row["latent"]]
        np.testing.assert_allclose(row["acts"], truth, rtol=1e-6)
        assert len(row["acts"]) == 16


def test_negatives_are_silent_in_the_whole_context(sampled, corpus):
    examples, _ = sampled
    negatives = examples.filter(pl.col("kind") != "activating")
    assert negatives.filter(pl.col("kind") == "random").height > 0
    for latent, ctx_id in negatives.select("latent", "ctx_id").iter_rows():
        assert not np.any(corpus.acts[ctx_id, :, latent] > 0)
    activating = examples.filter(pl.col("kind") == "activating")
    assert all(max(acts) > 0 for acts in activating["acts"].to_list())


def test_similar_negatives_hold_the_trigger_token(corpus):
    examples, _ = _sample(corpus, SamplingConfig(seed=3, window=16, peak_offset=10, batch_rows=3000,
                                                 similar_embedding_fraction=0.0))
    similar = examples.filter((pl.col("latent") == 2) & (pl.col("kind") == "similar"))
    assert similar.height == 20  # 10 explain + 10 score
    w7 = corpus.vocab.index("w7")
    for ctx_id, start in similar.select("ctx_id", "start").iter_rows():
        assert w7 in corpus.token_ids[ctx_id, start:start + 16]
    # latent 0 fires on every occurrence of its tokens: no hard negative by trigger tokens can exist
    assert examples.filter((pl.col("latent") == 0) & (pl.col("kind") == "similar")).height == 0


def test_similar_quota_mixes_trigger_tokens_and_embedding_neighbours(sampled, corpus):
    """Default fraction 0.5: per split 5 trigger-token negatives, then neighbours fill up to 10."""
    examples, _ = sampled
    w7 = corpus.vocab.index("w7")
    for split in ("explain", "score"):
        similar = examples.filter((pl.col("latent") == 2) & (pl.col("kind") == "similar") & (pl.col("split") == split))
        assert similar.height == 10
        windows = [corpus.token_ids[c, s:s + 16] for c, s in similar.select("ctx_id", "start").iter_rows()]
        with_trigger = sum(w7 in window for window in windows)
        assert with_trigger >= 5
        # latent 0 has no trigger-token negatives: neighbours fill its whole quota
        assert examples.filter((pl.col("latent") == 0) & (pl.col("kind") == "similar")
                               & (pl.col("split") == split)).height == 10


def test_counts_follow_the_config(sampled):
    examples, _ = sampled
    counts = {(s, k): n for s, k, n in examples.filter(pl.col("latent") == 0)
              .group_by(["split", "kind"]).len().iter_rows()}
    assert counts == {("explain", "activating"): 40, ("explain", "random"): 20, ("explain", "similar"): 10,
                      ("score", "activating"): 20, ("score", "random"): 20, ("score", "similar"): 10}


def test_quantile_bins_are_covered(sampled):
    examples, _ = sampled
    for latent in (0, 1):
        for split in ("explain", "score"):
            bins = examples.filter((pl.col("latent") == latent) & (pl.col("split") == split)
                                   & (pl.col("kind") == "activating"))["quantile"]
            assert set(bins.to_list()) == set(range(10)), (latent, split)


def test_two_latents_get_different_negatives(sampled):
    examples, _ = sampled
    random = examples.filter(pl.col("kind") == "random")
    sets = [set(random.filter(pl.col("latent") == latent)["ctx_id"].to_list()) for latent in (0, 1)]
    assert sets[0] != sets[1]
    assert len(sets[0] & sets[1]) < 10


def test_duplicate_windows_are_removed(sampled, corpus):
    examples, _ = sampled
    for (latent,), group in examples.group_by(["latent"]):
        windows = [tuple(corpus.token_ids[c, s:s + len(a)]) for c, s, a in group.select("ctx_id", "start", "acts")
                   .iter_rows()]
        assert len(windows) == len(set(windows)), latent
    copies = examples.filter((pl.col("latent") == 0) & (pl.col("ctx_id") < 26))
    assert copies.height == 1


def test_deterministic_and_chunking_independent(sampled, corpus):
    examples, _ = sampled
    again, _ = _sample(corpus, SamplingConfig(seed=3, window=16, peak_offset=10, batch_rows=777, score_random=20),
                       batch_size=7)
    assert again.equals(examples)
    other, _ = _sample(corpus, SamplingConfig(seed=4, window=16, peak_offset=10, batch_rows=3000, score_random=20))
    assert not other.equals(examples)


def test_records_hold_aligned_tokens(sampled, corpus):
    examples, stats = sampled
    records = build_latent_records(examples, corpus.contexts(), stats)
    assert [r.latent for r in records] == [0, 1, 2]
    for record in records:
        record.assert_disjoint()
        for example in record.explain + record.score:
            assert len(example.tokens) == len(example.acts) == len(example.token_ids)
            assert example.tokens == [corpus.vocab[i] for i in example.token_ids]
        assert record.max_act == pytest.approx(float(corpus.acts[..., record.latent].max()), rel=1e-6)


def test_part_order_and_extra_columns_do_not_matter(sampled, corpus):
    """Store parts come back in any order and flows adds an sae_id column to latent_acts."""
    examples, stats = sampled
    frames = [f.with_columns(pl.lit("sae").alias("sae_id")) for f in reversed(corpus.frames(batch_size=32))]
    cfg = SamplingConfig(seed=3, window=16, peak_offset=10, batch_rows=3000, score_random=20)
    again = sample_examples(pl.concat(frames).lazy(), corpus.contexts(), stats, cfg, "sae")
    assert again.equals(examples)
