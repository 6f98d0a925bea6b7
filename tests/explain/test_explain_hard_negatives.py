"""Hard negatives by embedding: nearest silent contexts on a planted corpus with known neighbours."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fixtures.planted import PlantedCorpus, PlantedRule, make_vocab, plant

from explain.latents.cache import LatentStatsAccumulator, LatentStatsConfig
from explain.sampling.activating import scan_activating
from explain.sampling.examples import SamplingConfig, sample_examples
from explain.sampling.negatives import embed_contexts, latent_queries, neighbour_candidates, token_weights

TRIGGER, TOPIC = 1, (2, 10)  # latent 0 fires on token 1; its contexts are otherwise made of tokens 2..9
N_BACKGROUND, N_ACTIVE, N_DECOY = 600, 60, 40
CFG = SamplingConfig(seed=5, window=16, peak_offset=10, batch_rows=3000, similar_embedding_fraction=1.0)


@pytest.fixture(scope="module")
def corpus() -> PlantedCorpus:
    """Background contexts of tokens 10..59; latent 0's contexts (topic tokens + the trigger); decoys:
    topic tokens without the trigger, so latent 0 is silent there and they are its nearest neighbours."""
    rng = np.random.default_rng(0)
    background = rng.integers(10, 60, size=(N_BACKGROUND, 32))
    active = rng.integers(*TOPIC, size=(N_ACTIVE, 32))
    active[:, [5, 20]] = TRIGGER
    decoys = rng.integers(*TOPIC, size=(N_DECOY, 32))
    token_ids = np.concatenate([background, active, decoys])[rng.permutation(N_BACKGROUND + N_ACTIVE + N_DECOY)]
    rules = {0: PlantedRule(("w1",)), 1: PlantedRule(("w12",))}
    return plant(token_ids, make_vocab(60), rules, n_latents=2, seed=1)


def _decoys(corpus: PlantedCorpus) -> set[int]:
    topical = (corpus.token_ids < TOPIC[1]).all(axis=1)
    return set(np.nonzero(topical & ~(corpus.token_ids == TRIGGER).any(axis=1))[0].tolist())


def _stats(corpus: PlantedCorpus) -> pl.DataFrame:
    acc = LatentStatsAccumulator(2)
    for frame in corpus.frames(batch_size=32):
        acc.update(frame)
    return acc.finalize("sae", corpus.n_tokens, LatentStatsConfig(min_contexts=5, max_frequency=0.2))


def _neighbours(corpus: PlantedCorpus, cfg: SamplingConfig) -> pl.DataFrame:
    nonzeros = pl.concat(corpus.frames(batch_size=32)).lazy()
    top, _ = scan_activating(nonzeros, _stats(corpus).filter(pl.col("status") == "ok"), cfg)
    return neighbour_candidates(nonzeros, corpus.contexts(), top, cfg)


def test_nearest_silent_contexts_are_the_decoys(corpus):
    found = _neighbours(corpus, CFG)
    latent0 = found.filter(pl.col("latent") == 0).sort("rank")
    assert set(latent0["ctx_id"].to_list()) == _decoys(corpus)  # pool 40 = exactly the 40 decoys
    assert latent0["rank"].to_list() == list(range(N_DECOY))
    latent1 = set(found.filter(pl.col("latent") == 1)["ctx_id"].to_list())
    assert latent1 and not latent1 & _decoys(corpus)  # w12 lives in background contexts


def test_neighbours_match_brute_force_at_any_chunk_size(corpus):
    contexts = corpus.contexts()
    nonzeros = pl.concat(corpus.frames(batch_size=32)).lazy()
    top, _ = scan_activating(nonzeros, _stats(corpus).filter(pl.col("status") == "ok"), CFG)
    bucket, weight = token_weights(contexts, CFG.embedding_dims)
    latents, queries = latent_queries(top, contexts, bucket, weight, CFG)
    scores = queries @ embed_contexts(contexts, bucket, weight, CFG.embedding_dims).T  # dense: fine when tiny
    scores[corpus.acts.max(axis=1).T[latents] > 0] = -np.inf
    expected = []
    for row, latent in enumerate(latents):
        order = np.lexsort((np.arange(scores.shape[1]), -scores[row]))[:CFG.neighbour_pool]
        expected += [(int(latent), int(c), rank) for rank, c in enumerate(order) if scores[row, c] > 0]
    for block in (1 << 24, 7, 2):  # one chunk, a few contexts per chunk, one context per chunk
        found = _neighbours(corpus, CFG.model_copy(update={"neighbour_block": block}))
        assert sorted(found.select("latent", "ctx_id", "rank").rows()) == sorted(expected), block


def test_sampled_embedding_negatives_are_silent_disjoint_and_deterministic(corpus):
    contexts, stats = corpus.contexts(), _stats(corpus)
    examples = sample_examples(pl.concat(corpus.frames(batch_size=32)).lazy(), contexts, stats, CFG, "sae")
    similar = examples.filter(pl.col("kind") == "similar")
    latent0 = similar.filter(pl.col("latent") == 0)
    assert latent0.group_by("split").len().sort("split").rows() == [("explain", 10), ("score", 10)]
    assert set(latent0["ctx_id"].to_list()) <= _decoys(corpus)
    for latent, ctx_id, acts in similar.select("latent", "ctx_id", "acts").iter_rows():
        assert max(acts) == 0 and not np.any(corpus.acts[ctx_id, :, latent] > 0)
    assert examples.group_by(["latent", "ctx_id"]).agg(pl.col("split").n_unique())["split"].max() == 1
    again = sample_examples(pl.concat(corpus.frames(batch_size=9)).lazy(), contexts, stats,
                            CFG.model_copy(update={"batch_rows": 500, "neighbour_block": 5}), "sae")
    assert again.equals(examples)


def test_fraction_zero_turns_the_embedding_source_off(corpus):
    cfg = CFG.model_copy(update={"similar_embedding_fraction": 0.0})
    examples = sample_examples(pl.concat(corpus.frames()).lazy(), corpus.contexts(), _stats(corpus), cfg, "sae")
    # latent 0 fires on every trigger occurrence: no trigger-token negatives, and no neighbours either
    assert examples.filter((pl.col("latent") == 0) & (pl.col("kind") == "similar")).height == 0


def test_similar_needs_split_the_quota():
    cfg = SamplingConfig(explain_similar=10, score_similar=7, similar_embedding_fraction=0.5)
    assert cfg.similar_needs("explain") == (5, 10)
    assert cfg.similar_needs("score") == (3, 7)
    assert SamplingConfig(similar_embedding_fraction=0.0).similar_needs("score") == (10, 10)
