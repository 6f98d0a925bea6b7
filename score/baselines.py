"""Random-explanation baseline: score each latent with another latent's explanation.

Every run scores these the same way as the real explanations, so the report shows what chance looks
like next to every explainer (a deranged explanation keeps the style, length and pattern count of a real
one, but says nothing about this latent).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace

import numpy as np

from explain.records import Explanation

log = logging.getLogger(__name__)

RANDOM_SUFFIX = "-random"


def baseline_name(explainer: str) -> str:
    """Name of the random baseline of `explainer` (e.g. "n2g" -> "n2g-random")."""
    return f"{explainer}{RANDOM_SUFFIX}"


def seeded_derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of range(n) with no fixed point ([n]); n must be 0 or >= 2."""
    if n == 1:
        raise ValueError("a single item has no derangement")
    while True:  # a random permutation is a derangement with probability ~1/e, so this ends fast
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def random_baseline_explanations(explanations: list[Explanation], seed: int) -> list[Explanation]:
    """For each ok explanation, a copy carrying another latent's explanation (same explainer).

    The result keeps the recipient's `latent`, takes the donor's text/patterns/model/prompt version,
    is named `f"{explainer}-random"` and costs nothing. Non-ok explanations get no baseline; an explainer
    with fewer than two ok explanations has none at all; two for one latent under one explainer raise.
    """
    by_explainer: dict[str, list[Explanation]] = defaultdict(list)
    for explanation in explanations:
        if explanation.ok:
            by_explainer[explanation.explainer].append(explanation)
    rng = np.random.default_rng(seed)
    baselines: list[Explanation] = []
    for explainer in sorted(by_explainer):
        group = sorted(by_explainer[explainer], key=lambda e: e.latent)
        if len({e.latent for e in group}) != len(group):
            raise ValueError(f"explainer {explainer}: several explanations for the same latent")
        if len(group) < 2:
            log.warning("explainer %s: %d ok explanation(s), no random baseline", explainer, len(group))
            continue
        donors = seeded_derangement(len(group), rng)
        baselines.extend(_swapped(recipient, group[int(d)]) for recipient, d in zip(group, donors, strict=True))
    return baselines


def _swapped(recipient: Explanation, donor: Explanation) -> Explanation:
    return replace(
        donor,
        latent=recipient.latent,
        explainer=baseline_name(recipient.explainer),
        patterns=[dict(p) for p in donor.patterns] if donor.patterns is not None else None,
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
    )
