"""N2G explanations of planted latents are exact, and match_patterns reproduces their firing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fixtures.planted import PlantedRule, planted_corpus

from explain.explainers.n2g import N2GConfig, N2GExplainer, explanation_text, match_patterns
from explain.latents.cache import LatentStatsAccumulator, LatentStatsConfig
from explain.records import Example, Explanation, LatentRecord, build_latent_records
from explain.sampling.examples import SamplingConfig, sample_examples


def explain_n2g(record: LatentRecord, cfg: N2GConfig | None = None) -> Explanation:
    """One record through N2GExplainer.explain_many."""
    (explanation,) = N2GExplainer(cfg).explain_many([record])
    return explanation


RULES = {0: PlantedRule(("w1", "w2", "##s4")), 1: PlantedRule(("w3",)), 2: PlantedRule(("w7",), after="w8")}


@pytest.fixture(scope="module")
def records() -> list[LatentRecord]:
    corpus = planted_corpus(RULES, n_latents=3, n_contexts=800, ctx_len=32, vocab_size=40, seed=5)
    frames = corpus.frames()
    acc = LatentStatsAccumulator(3)
    for frame in frames:
        acc.update(frame)
    stats = acc.finalize("sae", corpus.n_tokens, LatentStatsConfig(min_contexts=5))
    cfg = SamplingConfig(window=16, peak_offset=10)
    examples = sample_examples(pl.concat(frames).lazy(), corpus.contexts(), stats, cfg, "sae")
    return build_latent_records(examples, corpus.contexts(), stats)


def _firing_reproduced(patterns: list[dict], examples: list[Example]) -> None:
    """precision = recall = 1 on these examples: predicted > 0 exactly where the latent fires."""
    for example in examples:
        predicted = match_patterns(patterns, example.tokens) > 0
        np.testing.assert_array_equal(predicted, example.acts > 0)


def test_planted_unigram_latents_get_exactly_their_tokens(records):
    by_latent = {r.latent: r for r in records}
    for latent in (0, 1):
        explanation = explain_n2g(by_latent[latent])
        assert explanation.ok and explanation.explainer == "n2g"
        assert {tuple(p["ngram"]) for p in explanation.patterns} == {(t,) for t in RULES[latent].tokens}
        assert all(p["act"] > 0 for p in explanation.patterns)
        for token in RULES[latent].tokens:
            assert f'"{token}"' in explanation.text
        _firing_reproduced(explanation.patterns, by_latent[latent].score)


def test_planted_bigram_latent_gets_the_bigram(records):
    record = next(r for r in records if r.latent == 2)
    assert any(e.kind == "similar" for e in record.explain)
    explanation = explain_n2g(record)
    assert [p["ngram"] for p in explanation.patterns] == [["w8", "w7"]]
    _firing_reproduced(explanation.patterns, record.score)


def test_held_out_corpus_reproduces_firing_exactly(records):
    held_out = planted_corpus(RULES, n_latents=3, n_contexts=100, ctx_len=32, vocab_size=40, seed=99)
    vocab = np.array(held_out.vocab)
    for record in records:
        patterns = explain_n2g(record).patterns
        for ctx, ids in enumerate(held_out.token_ids):
            predicted = match_patterns(patterns, vocab[ids].tolist()) > 0
            np.testing.assert_array_equal(predicted, held_out.acts[ctx, :, record.latent] > 0)


def test_no_pattern_gives_a_failed_row_not_an_exception():
    noisy = Example(ctx_id=0, tokens=["a", "b", "a", "b"], acts=np.array([1.0, 0, 0, 0]), kind="activating")
    quiet = Example(ctx_id=1, tokens=["a", "a", "a", "c"], acts=np.zeros(4), kind="random")
    record = LatentRecord(sae_id="s", latent=7, explain=[noisy, quiet], score=[])
    explanation = explain_n2g(record, N2GConfig())
    assert explanation.status == "failed" and "precision" in explanation.error
    empty = explain_n2g(LatentRecord(sae_id="s", latent=8, explain=[quiet], score=[]))
    assert empty.status == "failed" and empty.error


def test_match_patterns_semantics():
    patterns = [{"ngram": ["the"], "act": 1.0}, {"ngram": ["of", "the"], "act": 3.0},
                {"ngram": ["Cat"], "act": 2.0, "ignore_case": True}]
    tokens = ["the", "end", "of", "the", "cat", "CAT", "##ing"]
    np.testing.assert_allclose(match_patterns(patterns, tokens), [1.0, 0, 0, 3.0, 2.0, 2.0, 0])
    assert match_patterns([], tokens).tolist() == [0.0] * 7
    assert match_patterns(patterns, []).shape == (0,)
    assert explanation_text(patterns[:2]) == '"the" | "of the"'
    # None is any token; `at` is the index of the predicted token inside the n-gram
    forms = [{"ngram": ["of", None], "act": 1.0}, {"ngram": ["end", "of"], "act": 2.0, "at": 0},
             {"ngram": [None, "##ing"], "act": 4.0, "at": 0}]
    np.testing.assert_allclose(match_patterns(forms, tokens), [0, 2.0, 0, 1.0, 0, 4.0, 0])
    assert explanation_text(forms) == '"of [any]" | "[[end]] of" | "[[[any]]] ##ing"'


def test_ignore_case_config_marks_patterns():
    acts = np.array([0, 2.0, 0, 1.0, 0, 3.0])
    example = Example(ctx_id=0, tokens=["x", "Dog", "y", "dog", "z", "DOG"], acts=acts, kind="activating")
    record = LatentRecord(sae_id="s", latent=0, explain=[example], score=[])
    explanation = explain_n2g(record, N2GConfig(ignore_case=True))
    assert explanation.patterns == [{"ngram": ["dog"], "act": 2.0, "precision": 1.0, "count": 3, "ignore_case": True}]
    np.testing.assert_array_equal(match_patterns(explanation.patterns, example.tokens) > 0, acts > 0)


def test_vectorised_matching_equals_match_patterns():
    """match_on_index (what the simulator runs) against match_patterns (the reference), every pattern form."""
    from explain.explainers.n2g import match_on_index
    from explain.latents.corpus_index import CorpusIndex

    rng = np.random.default_rng(0)
    vocab = ["a", "b", "C", "c", "d", "##e"]
    windows = [[vocab[i] for i in rng.integers(0, 6, rng.integers(1, 20))] for _ in range(40)]
    forms = [
        [{"ngram": ["a"], "act": 1.0}, {"ngram": ["b", "a"], "act": 3.0}, {"ngram": ["a", None, "d"], "act": 2.0}],
        [{"ngram": ["c"], "act": 1.5, "ignore_case": True}, {"ngram": ["d", "##e"], "act": 2.5, "at": 0}],
        [{"ngram": [None, "b"], "act": 1.0, "at": 0}, {"ngram": ["a", "b", "C"], "act": 4.0, "at": 1}],
        [{"ngram": [], "act": 0.5}, {"ngram": ["zzz"], "act": 9.0}],
    ]
    index = CorpusIndex.from_windows(windows, list(range(len(windows))))
    for patterns in forms:
        pred = match_on_index(patterns, index).reshape(index.token_ids.shape)
        for r, window in enumerate(windows):
            np.testing.assert_array_equal(pred[r, :len(window)], match_patterns(patterns, window))
            assert not pred[r, len(window):].any()  # padding is never predicted
