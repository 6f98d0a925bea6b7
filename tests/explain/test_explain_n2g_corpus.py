"""N2G mining on every explain-side token of the corpus (the pipeline's path): natural counts, planted
rules of every pattern form recovered exactly, no cap on the number of patterns, the score side unread."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fixtures.planted import PlantedRule, planted_corpus

from explain.explainers.n2g import CorpusSource, N2GConfig, N2GExplainer, match_patterns
from explain.latents.corpus_index import CorpusIndex
from explain.records import LatentRecord
from explain.sampling.keys import split_of

SEED, FRACTION, VOCAB = 4, 0.5, 60
RULES = {0: PlantedRule(("w1", "w2", "##s4")), 1: PlantedRule(("w7",), after="w8")}
N_LATENTS = 6  # 2: any token right after w11; 3: w12 only when w13 follows; 4: 20 trigger tokens; 5: w3 40 %


@pytest.fixture(scope="module")
def planted():
    corpus = planted_corpus(RULES, n_latents=N_LATENTS, n_contexts=600, ctx_len=24, vocab_size=VOCAB, seed=2)
    ids, acts, rng = corpus.token_ids, corpus.acts, np.random.default_rng(9)
    index = {t: i for i, t in enumerate(corpus.vocab)}
    prev, nxt = np.full_like(ids, -1), np.full_like(ids, -1)
    prev[:, 1:], nxt[:, :-1] = ids[:, :-1], ids[:, 1:]
    rules = {2: prev == index["w11"], 3: (ids == index["w12"]) & (nxt == index["w13"]),
             4: np.isin(ids, [index[f"w{i}"] for i in range(20, 45) if i % 5 != 4]),
             5: (ids == index["w3"]) & (rng.random(ids.shape) < 0.4)}
    for latent, fires in rules.items():
        acts[..., latent] = np.where(fires, rng.uniform(0.5, 5.0, ids.shape), 0.0)
    return corpus


def _cache(acts: np.ndarray) -> pl.DataFrame:
    ctx, pos, latent = np.nonzero(acts)
    return pl.DataFrame({"ctx_id": ctx.astype(np.int64), "pos": pos.astype(np.int32),
                         "latent": latent.astype(np.int32), "value": acts[ctx, pos, latent]})


def _explain(corpus, acts: np.ndarray | None = None, **cfg) -> dict:  # noqa: ANN001
    cache = _cache(corpus.acts if acts is None else acts)
    source = CorpusSource(CorpusIndex.from_contexts(corpus.contexts()),
                          lambda latents: cache.filter(pl.col("latent").is_in(latents)), SEED, FRACTION)
    explainer = N2GExplainer(N2GConfig(**cfg), source)
    return {e.latent: e for e in explainer.explain_many([LatentRecord("s", i, [], []) for i in range(N_LATENTS)])}


def _forms(explanation) -> set[tuple]:  # noqa: ANN001
    return {(tuple(p["ngram"]), p.get("at")) for p in explanation.patterns}


def test_planted_rules_of_every_form_are_recovered_exactly(planted):
    got = _explain(planted)
    assert _forms(got[0]) == {(("w1",), None), (("w2",), None), (("##s4",), None)}
    assert _forms(got[1]) == {(("w8", "w7"), None)}
    assert _forms(got[2]) == {(("w11", None), None)}  # any token right after w11
    assert _forms(got[3]) == {(("w12", "w13"), 0)}  # w12, read with the token after it
    vocab = np.array(planted.vocab)
    for latent in range(4):  # every context: the patterns reproduce the firing exactly
        for ctx, row in enumerate(planted.token_ids):
            predicted = match_patterns(got[latent].patterns, vocab[row].tolist()) > 0
            np.testing.assert_array_equal(predicted, planted.acts[ctx, :, latent] > 0)


def test_no_cap_truncates_good_patterns(planted):
    """20 trigger tokens, each a perfect pattern: all 20 are kept (the old explainer stopped at 10)."""
    assert len(_explain(planted)[4].patterns) == 20


def test_precision_is_counted_on_every_explain_side_token(planted):
    """A token followed by activation 40 % of the time: its precision is the natural count, and a
    min_precision above it drops the pattern."""
    pattern = next(p for p in _explain(planted)[5].patterns if p["ngram"] == ["w3"])
    explain_rows = split_of(SEED, np.full(600, 5), np.arange(600), FRACTION) == "explain"
    w3 = planted.token_ids[explain_rows] == planted.vocab.index("w3")
    firing = (planted.acts[explain_rows][..., 5] > 0) & w3
    assert pattern["count"] == int(w3.sum())
    assert pattern["precision"] == pytest.approx(firing.sum() / w3.sum(), abs=1e-6)
    assert 0.3 < pattern["precision"] < 0.5
    strict = _explain(planted, min_precision=0.5)[5].patterns or []
    assert ["w3"] not in [p["ngram"] for p in strict] and all(p["precision"] >= 0.5 for p in strict)


def test_the_score_split_is_never_read(planted):
    """Changing every activation on the score side of each latent leaves its explanation unchanged."""
    acts = planted.acts.copy()
    rng = np.random.default_rng(0)
    for latent in range(N_LATENTS):
        score_rows = split_of(SEED, np.full(600, latent), np.arange(600), FRACTION) == "score"
        acts[score_rows, :, latent] = np.where(rng.random(acts[score_rows, :, latent].shape) < 0.3, 1.0, 0.0)
    before, after = _explain(planted), _explain(planted, acts)
    assert all(before[i].patterns == after[i].patterns for i in range(N_LATENTS))


def test_a_latent_silent_on_the_explain_side_fails_with_a_reason(planted):
    acts = planted.acts.copy()
    explain_rows = split_of(SEED, np.full(600, 0), np.arange(600), FRACTION) == "explain"
    acts[explain_rows, :, 0] = 0.0
    failed = _explain(planted, acts)[0]
    assert failed.status == "failed" and "no activating token" in failed.error and failed.patterns is None
