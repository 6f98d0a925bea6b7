"""The random-explanation baseline is a seeded derangement among ok explanations."""

from __future__ import annotations

import numpy as np
import pytest

from explain.records import Explanation
from score.baselines import random_baseline_explanations, seeded_derangement


def _explanations(n: int, explainer: str = "n2g") -> list[Explanation]:
    return [
        Explanation(latent=i, explainer=explainer, text=f"text {i}", patterns=[{"ngram": [f"t{i}"], "act": 1.0}])
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_no_latent_gets_its_own_explanation(seed: int) -> None:
    originals = _explanations(7)
    baselines = random_baseline_explanations(originals, seed=seed)
    assert sorted(b.latent for b in baselines) == list(range(7))
    for b in baselines:
        assert b.text != f"text {b.latent}"
        assert b.patterns == [{"ngram": [f"t{int(b.text.split()[1])}"], "act": 1.0}]
        assert b.explainer == "n2g-random" and b.ok and b.cost_usd == 0.0
    assert sorted(b.text for b in baselines) == sorted(e.text for e in originals)  # a permutation


def test_seeded_and_seed_dependent() -> None:
    originals = _explanations(30)
    first = [b.text for b in random_baseline_explanations(originals, seed=1)]
    assert first == [b.text for b in random_baseline_explanations(originals, seed=1)]
    assert first != [b.text for b in random_baseline_explanations(originals, seed=2)]


def test_only_ok_explanations_and_per_explainer() -> None:
    originals = _explanations(4) + _explanations(3, explainer="llm")
    originals[0].status = "failed"
    baselines = random_baseline_explanations(originals, seed=0)
    assert sorted((b.explainer, b.latent) for b in baselines) == [
        ("llm-random", 0),
        ("llm-random", 1),
        ("llm-random", 2),
        ("n2g-random", 1),
        ("n2g-random", 2),
        ("n2g-random", 3),
    ]
    assert all(b.text != "text 0" for b in baselines if b.explainer == "n2g-random")


def test_too_few_explanations_give_no_baseline() -> None:
    assert random_baseline_explanations(_explanations(1), seed=0) == []
    assert random_baseline_explanations([], seed=0) == []


def test_donor_patterns_are_copies() -> None:
    originals = _explanations(2)
    baselines = random_baseline_explanations(originals, seed=0)
    baselines[0].patterns[0]["act"] = 99.0
    assert all(e.patterns[0]["act"] == 1.0 for e in originals)


def test_derangement_has_no_fixed_points() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 100):
        perm = seeded_derangement(n, rng)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))
