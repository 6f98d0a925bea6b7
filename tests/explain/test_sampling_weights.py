"""Natural-population weights of the score examples, against a planted population enumerated by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
from fixtures.planted import PlantedCorpus, PlantedRule, make_vocab, plant

from explain.latents.cache import LatentStatsAccumulator, LatentStatsConfig
from explain.records import build_latent_records
from explain.sampling.activating import scan_pools
from explain.sampling.examples import SamplingConfig, sample_examples
from explain.sampling.keys import split_of
from explain.sampling.negatives import holds_trigger, silent_trigger_counts, similar_candidates, trigger_tokens
from explain.sampling.weights import TriggerStratum, score_tokens, with_weights

RULES = {0: PlantedRule(("w1", "w2")), 1: PlantedRule(("w3",)), 2: PlantedRule(("w7",), after="w8")}
N_LATENTS, N_CTX, CTX_LEN = 5, 600, 32
CFG = SamplingConfig(seed=3, window=16, peak_offset=10, batch_rows=2500)


@pytest.fixture(scope="module")
def corpus() -> PlantedCorpus:
    token_ids = np.random.default_rng(4).integers(0, 40, size=(N_CTX, CTX_LEN))
    return plant(token_ids, make_vocab(40), RULES, N_LATENTS, dense_latents=(3,), seed=5)


@pytest.fixture(scope="module")
def stats(corpus: PlantedCorpus) -> pl.DataFrame:
    acc = LatentStatsAccumulator(N_LATENTS)
    for frame in corpus.frames(batch_size=32):
        acc.update(frame)
    return acc.finalize("sae", corpus.n_tokens, LatentStatsConfig(min_contexts=5, max_frequency=0.2))


@pytest.fixture(scope="module")
def examples(corpus: PlantedCorpus, stats: pl.DataFrame) -> pl.DataFrame:
    return sample_examples(pl.concat(corpus.frames()).lazy(), corpus.contexts(), stats, CFG, "sae")


def _strata(corpus: PlantedCorpus, stats: pl.DataFrame, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over every context: (score side [n_ctx] bool, decile of the context's max, -1 if silent)."""
    ids = np.arange(N_CTX)
    held = split_of(CFG.seed, np.full(N_CTX, latent), ids, CFG.explain_fraction) == "score"
    ctx_max = corpus.acts[:, :, latent].max(axis=1)
    edges = np.array(stats.filter(pl.col("latent") == latent)["decile_edges"][0].to_list(), dtype=np.float32)
    decile = np.where(ctx_max > 0, (ctx_max[:, None] > edges[1:10]).sum(axis=1), -1)
    return held, decile


def _triggers(corpus: PlantedCorpus, stats: pl.DataFrame, cfg: SamplingConfig = CFG) -> pl.DataFrame:
    """latent, token_id: the trigger tokens the sampler uses (its choice is not what these tests check)."""
    scan = scan_pools(pl.concat(corpus.frames()).lazy(), stats.filter(pl.col("status") == "ok"), cfg)
    return trigger_tokens(scan.top, corpus.contexts(), cfg.n_trigger_tokens)


def _holds(corpus: PlantedCorpus, triggers: pl.DataFrame, latent: int) -> np.ndarray:
    """Brute force [n_ctx] bool: the context holds one of the latent's trigger tokens."""
    tokens = triggers.filter(pl.col("latent") == latent)["token_id"].to_numpy()
    return np.isin(corpus.token_ids, tokens).any(axis=1)


def test_weights_sum_to_each_strata_token_count(corpus, stats, examples):
    score = examples.filter(pl.col("split") == "score").with_columns(pl.col("acts").list.len().alias("n"))
    assert score["weight"].null_count() == 0
    triggers = _triggers(corpus, stats)
    window = min(CTX_LEN, CFG.window)
    stratified = 0
    for latent in (0, 1, 2):
        held, decile = _strata(corpus, stats, latent)
        trig = _holds(corpus, triggers, latent)
        mine = score.filter(pl.col("latent") == latent)
        mine = mine.with_columns((pl.col("weight") * pl.col("n")).alias("wn"),
                                 pl.Series("trig", trig[mine["ctx_id"].to_numpy()]))
        for d in range(10):
            picked = mine.filter((pl.col("kind") == "activating") & (pl.col("quantile") == d))
            assert picked["wn"].sum() == pytest.approx(np.sum(held & (decile == d)) * window), (latent, d)
        # neighbours (certainty units) weigh 1; trigger-token hard negatives stand for a stratum (weight >= 2)
        similar = mine.filter(pl.col("kind") == "similar")
        neighbours, hard = similar.filter(pl.col("weight") == 1.0), similar.filter(pl.col("weight") != 1.0)
        assert hard["trig"].all() and (hard["weight"] >= CTX_LEN / window).all()
        randoms = mine.filter(pl.col("kind") == "random")
        # the trigger stratum: silent held-out trigger contexts the neighbours did not take, counted by brute force
        n_trig = int(np.sum(held & (decile < 0) & trig)) - int(neighbours["trig"].sum())
        in_stratum = pl.concat([hard, randoms.filter(pl.col("trig"))])
        stratum_tokens = n_trig * CTX_LEN if in_stratum.height else 0  # no window there: the plain ones stand in
        assert in_stratum["wn"].sum() == pytest.approx(stratum_tokens), latent
        stratified += hard.height > 0
        rest = held.sum() * CTX_LEN - np.sum(held & (decile >= 0)) * window - stratum_tokens - neighbours["n"].sum()
        assert randoms.filter(~pl.col("trig"))["wn"].sum() == pytest.approx(rest), latent
        assert mine["wn"].sum() == pytest.approx(held.sum() * CTX_LEN)  # = the natural population's tokens
    assert stratified  # the planted corpus has latents with silent trigger contexts


def test_silent_trigger_counts_are_exact_and_do_not_depend_on_chunking(corpus, stats):
    triggers = _triggers(corpus, stats)
    got = []
    for chunk, rows in ((8192, 2500), (37, 300)):
        cfg = CFG.model_copy(update={"context_chunk": chunk, "batch_rows": rows})
        _, score_hits = similar_candidates(triggers, corpus.contexts(), cfg)
        nonzeros = pl.concat(corpus.frames(batch_size=7)).lazy()
        got.append(dict(silent_trigger_counts(nonzeros, corpus.contexts(), triggers, score_hits, cfg).iter_rows()))
    assert got[0] == got[1]
    for latent in triggers["latent"].unique().to_list():
        held, decile = _strata(corpus, stats, latent)
        want = int(np.sum(held & (decile < 0) & _holds(corpus, triggers, latent)))
        assert got[0].get(latent, 0) == want, latent


def test_holds_trigger_matches_brute_force(corpus, stats):
    triggers = _triggers(corpus, stats)
    rng = np.random.default_rng(0)
    pairs = pl.DataFrame({"latent": rng.integers(0, 3, 200).astype(np.int32), "ctx_id": rng.integers(0, N_CTX, 200)})
    got = holds_trigger(pairs, corpus.contexts(), triggers).to_list()
    assert got == [bool(_holds(corpus, triggers, lat)[c]) for lat, c in pairs.iter_rows()]


def _enumerated_estimates(density: np.ndarray, anchored_only: bool) -> tuple[float, list[float]]:
    """Every sample of a small silent population of latent 0 (no activating context): k = 2 trigger-token
    hard negatives of its 3 trigger contexts, then 3 random picks of the other silent contexts with every
    window start. Returns (the population's predicted tokens, the weighted estimate of each sample).

    density[c]: share of context c's tokens predicted, spread evenly (period 1 / density, so every
    window holds window * density of them); anchored_only: trigger contexts are predicted only at the
    hard negatives' anchor instead."""
    cfg, ctx_len, trigger_token = SamplingConfig(seed=0, window=4, peak_offset=2), 8, 99
    ids = np.arange(24, dtype=np.int64)
    held = ids[split_of(cfg.seed, np.zeros(len(ids)), ids, cfg.explain_fraction) == "score"]
    trig, rest = held[:3], held[3:]
    assert len(rest) >= 5
    tokens = [[trigger_token if c in trig and pos == 5 else 0 for pos in range(ctx_len)] for c in ids]
    contexts = pl.DataFrame({"ctx_id": ids, "token_ids": tokens})
    anchor_start = 5 - cfg.peak_offset

    def predicted(c: int, start: int) -> float:
        if anchored_only:
            return float(c in trig and start <= 5 < start + cfg.window)
        return float(cfg.window * density[c])

    population = sum(float(ctx_len * density[c]) if not (anchored_only and c in trig) else 1.0 for c in held)
    stratum = TriggerStratum(pl.DataFrame({"latent": [0], "token_id": [trigger_token]}),
                             pl.DataFrame({"latent": [0], "n_contexts": [len(trig)]}))
    counts = pl.DataFrame(schema={"latent": pl.Int32, "split": pl.String, "decile": pl.Int32, "n_contexts": pl.Int64})
    estimates = []
    for hard in itertools.combinations(trig, 2):
        others = [c for c in held if c not in hard]
        for picks in itertools.combinations(others, 3):
            rows = [("similar", c) for c in hard] + [("random", c) for c in picks]
            chosen = pl.DataFrame({"latent": [0] * len(rows), "split": ["score"] * len(rows),
                                   "group": [g for g, _ in rows], "quantile": [-1] * len(rows),
                                   "ctx_id": [c for _, c in rows], "length": [cfg.window] * len(rows)},
                                  schema_overrides={"latent": pl.Int32, "quantile": pl.Int32})
            w = dict(zip(chosen["ctx_id"], with_weights(chosen, counts, stratum, contexts, cfg)["weight"], strict=True))
            assert sum(w.values()) * cfg.window == pytest.approx(len(held) * ctx_len)  # every sample
            hard_part = sum(w[c] * predicted(c, anchor_start) for c in hard)
            for starts in itertools.product(range(ctx_len - cfg.window + 1), repeat=3):
                estimates.append(hard_part + sum(w[c] * predicted(c, s) for c, s in zip(picks, starts, strict=True)))
    return population, estimates


def test_totals_are_unbiased_over_every_sample_of_an_enumerable_design():
    """With predictions spread evenly along each context, the mean estimate over all samples is the total."""
    density = np.zeros(24)
    density[[1, 4, 7, 10, 13, 16, 19, 22]] = [1.0, 0.5, 0.25, 0.5, 1.0, 0.25, 0.5, 1.0]
    population, estimates = _enumerated_estimates(density, anchored_only=False)
    assert population > 0 and np.mean(estimates) == pytest.approx(population)


def test_false_alarms_at_the_trigger_are_over_counted_not_missed():
    """The documented approximation: the hard negatives' windows hold the trigger, so predictions that sit
    only there are over-counted on average (precision biased low, never high, by it)."""
    population, estimates = _enumerated_estimates(np.zeros(24), anchored_only=True)
    assert np.mean(estimates) > population


def test_explain_examples_have_no_weight(examples):
    assert examples.filter(pl.col("split") == "explain")["weight"].is_null().all()


def test_stratum_counts_are_exact_and_do_not_depend_on_chunking(corpus, stats):
    ok = stats.filter(pl.col("status") == "ok")
    counts = [scan_pools(pl.concat(corpus.frames(batch_size=b)).lazy(), ok,
                         CFG.model_copy(update={"batch_rows": rows})).counts.sort("latent", "split", "decile")
              for b, rows in ((32, 2500), (7, 300))]
    assert counts[0].equals(counts[1])
    for latent in ok["latent"].to_list():
        held, decile = _strata(corpus, stats, latent)
        for split, side in (("score", held), ("explain", ~held)):
            got = counts[0].filter((pl.col("latent") == latent) & (pl.col("split") == split))
            want = {d: int(np.sum(side & (decile == d))) for d in range(10) if np.sum(side & (decile == d))}
            assert dict(zip(got["decile"].to_list(), got["n_contexts"].to_list(), strict=True)) == want


def test_score_tokens_counts_the_split_exactly():
    ids = np.arange(1000, dtype=np.int64) + (7 << 32)
    latents = np.array([0, 5, 9], dtype=np.int32)
    got = score_tokens(latents, ids, 64, CFG, block=700)  # blocks of one latent
    want = [np.sum(split_of(CFG.seed, np.full(len(ids), lat), ids, CFG.explain_fraction) == "score") * 64
            for lat in latents]
    assert got.tolist() == want


def test_a_stratum_without_picks_leaves_the_latent_without_weights(corpus, stats):
    """No random picks: the silent tokens have no stand-in, so no weight is better than a wrong one."""
    no_random = CFG.model_copy(update={"score_random": 0})
    examples = sample_examples(pl.concat(corpus.frames()).lazy(), corpus.contexts(), stats, no_random, "sae")
    assert examples.filter(pl.col("split") == "score")["weight"].is_null().all()


def test_records_carry_the_weights(corpus, stats, examples):
    records = build_latent_records(examples, corpus.contexts(), stats)
    by_key = {(r["latent"], r["ctx_id"]): r["weight"] for r in examples.iter_rows(named=True)}
    for record in records:
        assert all(e.weight is None for e in record.explain)
        assert [e.weight for e in record.score] == [by_key[(record.latent, e.ctx_id)] for e in record.score]
    # frames sampled before weights existed: no weight column, no weights
    old = build_latent_records(examples.drop("weight"), corpus.contexts(), stats)
    assert all(e.weight is None for r in old for e in r.score)
