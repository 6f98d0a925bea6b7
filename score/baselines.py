"""Baselines scored beside every explainer, so a reader can judge what an explanation adds.

- `<explainer>-random`: each latent gets another latent's explanation (a seeded derangement). It keeps
  the style, length and pattern count of a real one but says nothing about this latent: a floor.
- `top-token`: the latent's most frequent peak token on its explain examples, as a one-pattern
  explanation. The simplest rule a reader would try first; an explanation should beat it.
- `always-on`: predicts every token (an empty n-gram matches everywhere), so its precision is the
  latent's prevalence and its recall 1.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from explain.records import Explanation, LatentRecord

log = logging.getLogger(__name__)

RANDOM_SUFFIX = "-random"
TOP_TOKEN = "top-token"
ALWAYS_ON = "always-on"
PATTERN_BASELINES = (TOP_TOKEN, ALWAYS_ON)
"""Baselines that are pattern rules: scored by pattern matching whatever the run's explainer."""


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


def top_token_explanations(records: Sequence[LatentRecord]) -> list[Explanation]:
    """Per record, its most frequent peak token over the activating explain examples (ties: the token
    that sorts first), as one pattern whose act is the mean peak activation. Explain split only: the
    score split stays held out. A record with no activating explain example gets a failed row."""
    out = []
    for record in records:
        peaks = [(e.tokens[int(np.argmax(e.acts))], float(np.max(e.acts))) for e in record.explain
                 if e.is_activating and e.tokens]
        if not peaks:
            out.append(Explanation(latent=record.latent, explainer=TOP_TOKEN, text="", status="failed",
                                   error="no activating explain example", patterns=[]))
            continue
        counts = Counter(token for token, _ in peaks)
        token = min(counts, key=lambda t: (-counts[t], t))
        act = float(np.mean([a for t, a in peaks if t == token]))
        out.append(Explanation(latent=record.latent, explainer=TOP_TOKEN, text=f'"{token}"',
                               patterns=[{"ngram": [token], "act": round(act, 6)}]))
    return out


def always_on_explanations(latents: Sequence[int]) -> list[Explanation]:
    """Per latent, the explanation "fires on every token" (one empty n-gram, act 1)."""
    return [Explanation(latent=int(latent), explainer=ALWAYS_ON, text="every token",
                        patterns=[{"ngram": [], "act": 1.0}]) for latent in latents]
