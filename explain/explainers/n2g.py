"""N2G-style explainer: n-gram patterns that end at the activating token (no LLM).

Mining (explain split only): every n-gram (n = 1..max_n) that ends at an activating token of an
activating example is a candidate. Each candidate is matched against every token of the explain
set (activating and non-activating examples); candidates below min_precision or min_support are
pruned. Patterns are then added greedily, each time the one that most raises the explain-set F1 of
the pattern set, until nothing improves or max_patterns is reached. A pattern's act is the mean
activation over all tokens it matches on the explain set (its expected activation when it fires).

`match_patterns` turns patterns back into per-token predictions; score/'s N2G simulator uses it,
so explainer and simulator share one definition of "matches". `N2GExplainer` implements the
`Explainer` protocol (explain/explainers/base.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from explain.records import Example, Explanation, LatentRecord

ALGORITHM_VERSION = "n2g-v1"
EXPLAINER_NAME = "n2g"


class N2GConfig(BaseModel):
    """N2G pattern mining."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    max_n: int = Field(default=3, ge=1)
    """Longest n-gram, in tokens, ending at the activating token."""
    min_precision: float = Field(default=0.5, ge=0.0, le=1.0)
    """A pattern must be followed by activation at least this often on the explain set."""
    min_support: int = Field(default=2, ge=1)
    """A pattern must end at this many activating tokens of the explain set (guards memorising)."""
    max_patterns: int = Field(default=10, ge=1)
    """Most patterns in one explanation."""
    ignore_case: bool = False
    """Match tokens case-insensitively (uncased tokenizers make this moot)."""


@dataclass
class _Candidate:
    ngram: tuple[str, ...]
    positives: frozenset[int]
    negatives: frozenset[int]
    act: float

    @property
    def precision(self) -> float:
        return len(self.positives) / max(len(self.positives) + len(self.negatives), 1)


def _norm(tokens: list[str], ignore_case: bool) -> list[str]:
    return [t.lower() for t in tokens] if ignore_case else list(tokens)


def _ends(examples: list[Example], ignore_case: bool) -> tuple[list[str], list[float], list[int]]:
    """Flattened explain set: tokens, acts, and for each token the flat index where its example starts."""
    tokens: list[str] = []
    acts: list[float] = []
    starts: list[int] = []
    for example in examples:
        starts.extend([len(tokens)] * len(example.tokens))
        tokens.extend(_norm(example.tokens, ignore_case))
        acts.extend(np.asarray(example.acts, dtype=np.float64).tolist())
    return tokens, acts, starts


def _ngrams_ending_at(i: int, tokens: list[str], start: int, max_n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i - n + 1:i + 1]) for n in range(1, min(max_n, i - start + 1) + 1)]


def _candidates(examples: list[Example], cfg: N2GConfig) -> list[_Candidate]:
    """N-grams ending at >= min_support activating tokens, with their positive / negative match sets."""
    tokens, acts, starts = _ends(examples, cfg.ignore_case)
    positives: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, act in enumerate(acts):
        if act > 0:
            for ngram in _ngrams_ending_at(i, tokens, starts[i], cfg.max_n):
                positives[ngram].append(i)
    kept = {g: ends for g, ends in positives.items() if len(ends) >= cfg.min_support}
    last_tokens = {g[-1] for g in kept}
    negatives: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, act in enumerate(acts):
        if act <= 0 and tokens[i] in last_tokens:  # cheap filter: most tokens end no kept n-gram
            for ngram in _ngrams_ending_at(i, tokens, starts[i], cfg.max_n):
                if ngram in kept:
                    negatives[ngram].append(i)
    out = []
    for ngram, ends in kept.items():
        misses = negatives.get(ngram, [])
        mean_act = sum(acts[i] for i in ends) / (len(ends) + len(misses))
        candidate = _Candidate(ngram, frozenset(ends), frozenset(misses), mean_act)
        if candidate.precision >= cfg.min_precision:
            out.append(candidate)
    return out


def _f1(tp: int, fp: int, n_positive: int) -> float:
    return 2 * tp / max(2 * tp + fp + (n_positive - tp), 1)


def _greedy(candidates: list[_Candidate], n_positive: int, max_patterns: int) -> list[_Candidate]:
    """Add the candidate that most raises explain-set F1; ties -> higher precision, shorter, lexical."""
    chosen: list[_Candidate] = []
    covered: set[int] = set()
    false: set[int] = set()
    best_f1 = 0.0
    while len(chosen) < max_patterns:
        scored = []
        for c in candidates:
            tp = len(covered) + len(c.positives - covered)
            fp = len(false) + len(c.negatives - false)
            scored.append((_f1(tp, fp, n_positive), c.precision, -len(c.ngram), tuple(c.ngram), c))
        if not scored:
            break
        f1, _, _, _, best = max(scored, key=lambda s: s[:4])
        if f1 <= best_f1 + 1e-12:
            break
        chosen.append(best)
        covered |= best.positives
        false |= best.negatives
        best_f1 = f1
        candidates = [c for c in candidates if c is not best]
    return chosen


def explanation_text(patterns: list[dict]) -> str:
    """Readable form: '"foo" | "bar baz"' (tokens of an n-gram joined by spaces)."""
    return " | ".join('"' + " ".join(p["ngram"]) + '"' for p in patterns)


class N2GExplainer:
    """N-gram explanations of latents from their explain split (the score split is never read)."""

    name = EXPLAINER_NAME

    def __init__(self, config: N2GConfig | None = None) -> None:
        self.config = config or N2GConfig()

    def identity(self) -> dict:
        return {"explainer": self.name, "algorithm": ALGORITHM_VERSION, **self.config.model_dump()}

    def explain_many(self, records: Sequence[LatentRecord]) -> list[Explanation]:
        """One explanation per record, in order (CPU only: no concurrency, no progress bar of its own)."""
        return [self._explain(record) for record in records]

    def _explain(self, record: LatentRecord) -> Explanation:
        cfg = self.config
        examples = record.explain
        n_positive = int(sum(int(np.sum(np.asarray(e.acts) > 0)) for e in examples))
        if n_positive == 0:
            return self._failed(record, "no activating token in the explain set", patterns=None)
        chosen = _greedy(_candidates(examples, cfg), n_positive, cfg.max_patterns)
        if not chosen:
            return self._failed(record, f"no n-gram (n <= {cfg.max_n}) reaches precision {cfg.min_precision} "
                                        f"with support {cfg.min_support} on the explain set", patterns=[])
        patterns = [_pattern(c, cfg.ignore_case) for c in sorted(chosen, key=lambda c: (-c.act, c.ngram))]
        return Explanation(latent=record.latent, explainer=self.name, text=explanation_text(patterns),
                           patterns=patterns, prompt_version=ALGORITHM_VERSION)

    def _failed(self, record: LatentRecord, error: str, patterns: list[dict] | None) -> Explanation:
        return Explanation(latent=record.latent, explainer=self.name, text="", status="failed", error=error,
                           patterns=patterns, prompt_version=ALGORITHM_VERSION)


def _pattern(candidate: _Candidate, ignore_case: bool) -> dict:
    pattern: dict = {"ngram": list(candidate.ngram), "act": round(candidate.act, 6)}
    if ignore_case:
        pattern["ignore_case"] = True
    return pattern


def match_patterns(patterns: list[dict], tokens: list[str]) -> np.ndarray:
    """Predicted activation per token [len(tokens)]: the largest act of the patterns whose n-gram
    ends at that token, 0 where none does. A pattern with "ignore_case": true matches any case."""
    pred = np.zeros(len(tokens), dtype=np.float32)
    exact: dict[tuple[str, ...], float] = {}
    folded: dict[tuple[str, ...], float] = {}
    for p in patterns or []:
        ngram = tuple(p["ngram"])
        table, key = (folded, tuple(t.lower() for t in ngram)) if p.get("ignore_case") else (exact, ngram)
        table[key] = max(table.get(key, 0.0), float(p["act"]))
    lengths = sorted({len(k) for k in exact} | {len(k) for k in folded})
    lowered = [t.lower() for t in tokens] if folded else tokens
    for i in range(len(tokens)):
        for n in lengths:
            if n > i + 1:
                break
            act = max(exact.get(tuple(tokens[i - n + 1:i + 1]), 0.0),
                      folded.get(tuple(lowered[i - n + 1:i + 1]), 0.0) if folded else 0.0)
            pred[i] = max(pred[i], act)
    return pred
