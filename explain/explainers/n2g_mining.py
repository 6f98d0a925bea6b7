"""N2G pattern mining: the n-grams that best predict where a latent fires, from natural counts.

Input: a CorpusIndex (explain/latents/corpus_index.py), which of its rows the explainer may read (a
latent's explain-side contexts: every one of them, not only the sampled windows) and the positions
where the latent fires there. Counting on every explain-side token is what makes a pattern's
precision mean "when this n-gram appears, the latent fires", the number a reader checks on new text;
windows sampled around activations would count each n-gram mostly where the latent fires.

1. Candidates: every n-gram (n = 1..max_n, optionally with wildcard positions: `shapes`) that ends at
   >= min_support firing tokens.
2. Natural counts: each candidate's occurrences on the readable rows; precision = firing / occurrences.
   Candidates below min_precision are dropped. Frequent n-grams are first screened by their count in
   the whole index times the readable share (a candidate with fewer than half the firings its
   precision needs is not looked up), so a latent that fires on "the" costs no full scan of "the".
3. Selection: greedily add the candidate that most raises F1 over all readable tokens (every firing
   token counts, covered or not), until the best gain is below min_f1_gain. No cap on the number of
   patterns: a pattern stays when it adds F1, however many came before it.

A pattern's act is its mean activation over all its occurrences (its expected activation when it
fires); the simulator predicts the largest act of the patterns ending at a token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from explain.latents.corpus_index import NO_KEY, CorpusIndex, Shape

SCREEN_SLACK = 0.5
"""Screen by whole-index counts at this fraction of min_precision: a candidate is looked up unless its
firings are below half of what min_precision needs at its expected readable count."""


@dataclass(frozen=True)
class MinedPattern:
    """One selected n-gram with its natural counts on the readable rows."""

    token_ids: tuple[int | None, ...]
    """The n-gram's token ids, None at a wildcard position (any token)."""
    at: int
    """Index in the n-gram of the token the pattern predicts."""
    act: float
    """Mean activation over its occurrences."""
    firing: int
    """Occurrences where the latent fires."""
    occurrences: int

    @property
    def precision(self) -> float:
        return self.firing / max(self.occurrences, 1)


@dataclass(frozen=True)
class MiningResult:
    patterns: list[MinedPattern]
    n_firing: int
    """Firing tokens on the readable rows (the recall denominator)."""
    f1: float
    """F1 of the selected set on the readable rows."""
    reason: str = ""
    """Why nothing was selected (empty when patterns were found)."""


Template = tuple[Shape, int]
"""A pattern's form: its n-gram shape and `at`, the index inside the n-gram of the token it predicts
(n - 1: the n-gram ends at that token; smaller: the n-gram reads tokens after it)."""


def templates(max_n: int, wildcards: bool, lookahead: bool) -> list[Template]:
    """The pattern forms mined. Plain n-grams ending at the firing token; with lookahead, n-grams that
    also cover tokens after it (an encoder such as BERT reads both sides); with wildcards, any-token
    positions inside the n-gram: (A, *) "right after A", (A, *, C), ... A wildcard at either end of an
    n-gram only repeats a shorter one, unless the predicted token sits there."""
    out: list[Template] = []
    for n in range(1, max_n + 1):
        for at in range(n) if lookahead else [n - 1]:
            for mask in range(1 << n) if wildcards else [(1 << n) - 1]:
                shape = tuple(bool((mask >> (n - 1 - j)) & 1) for j in range(n))
                ends_fixed = all(shape[j] or j == at for j in (0, n - 1))
                if any(shape) and ends_fixed and (wildcards or all(shape)):
                    out.append((shape, at))
    return out


@dataclass
class _Candidates:
    template: list[Template]
    """[c] each candidate's form."""
    key: np.ndarray
    """[c] packed key."""
    firing: np.ndarray
    """[c] firing occurrences."""
    where: sp.csr_matrix
    """[c, u] 1 where candidate c occurs at readable position u (of `flat`)."""
    flat: np.ndarray
    """[u] flat positions of the union of occurrences."""


def mine_patterns(index: CorpusIndex, readable: np.ndarray, fire_flat: np.ndarray, fire_act: np.ndarray,
                  forms: list[Template], min_precision: float, min_support: int, min_f1_gain: float) -> MiningResult:
    """Patterns for one latent.

    readable: [n_rows] bool, the rows the explainer may count on. fire_flat: [p] sorted unique flat
    positions (row * row_len + t) on readable rows where the latent fires; fire_act: [p] activations.
    """
    p = len(fire_flat)
    if p == 0:
        return MiningResult([], 0, 0.0, "no activating token in the explain-side contexts")
    cands = _candidates(index, readable, fire_flat, forms, min_precision, min_support)
    if cands is None:
        longest = max(len(shape) for shape, _ in forms)
        return MiningResult([], p, 0.0, f"no n-gram (n <= {longest}) reaches precision {min_precision} "
                                        f"with support {min_support} on the explain side")
    fires = np.isin(cands.flat, fire_flat)
    chosen, f1 = _greedy(cands, fires, p, min_f1_gain)
    act_at = np.zeros(len(cands.flat))
    act_at[fires] = fire_act[np.searchsorted(fire_flat, cands.flat[fires])]
    patterns = []
    for c in chosen:
        cols = cands.where.indices[cands.where.indptr[c]:cands.where.indptr[c + 1]]
        shape, at = cands.template[c]
        first = int(cands.flat[cols[0]]) - at  # the n-gram's first token
        ids = tuple(int(i) if fixed else None
                    for i, fixed in zip(index.token_ids.reshape(-1)[first:first + len(shape)], shape, strict=True))
        patterns.append(MinedPattern(ids, at, float(act_at[cols].sum() / len(cols)), int(cands.firing[c]),
                                     len(cols)))
    return MiningResult(patterns, p, f1)


def _candidates(index: CorpusIndex, readable: np.ndarray, fire_flat: np.ndarray, forms: list[Template],
                min_precision: float, min_support: int) -> _Candidates | None:
    """Candidate n-grams with their readable occurrences, those reaching min_precision only."""
    T = index.row_len
    share = float(readable.mean()) if readable.size else 0.0
    parts: list[tuple[Template, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for shape, at in forms:
        shift = len(shape) - 1 - at  # the n-gram ends `shift` tokens after the predicted one
        ends = fire_flat[fire_flat % T + shift < T] + shift
        keys = index.keys_at(shape, ends)
        keys, firing = np.unique(keys[keys != NO_KEY], return_counts=True)
        keep = firing >= min_support
        keys, firing = keys[keep], firing[keep]
        expected = index.counts(shape, keys) * share
        screened = firing >= SCREEN_SLACK * min_precision * np.maximum(expected, firing)
        keys, firing = keys[screened], firing[screened]
        which, flat = index.occurrences(shape, keys)
        flat = flat - shift  # the predicted token of each occurrence
        on = readable[flat // T]
        which, flat = which[on], flat[on]
        occurrences = np.bincount(which, minlength=len(keys))
        precise = firing >= min_precision * occurrences
        keep_which = precise[which]
        renumber = np.cumsum(precise) - 1
        parts.append(((shape, at), keys[precise], firing[precise], renumber[which[keep_which]], flat[keep_which]))
    if not any(len(part[1]) for part in parts):
        return None
    offsets = np.cumsum([0] + [len(part[1]) for part in parts])
    rows = np.concatenate([part[3] + offsets[i] for i, part in enumerate(parts)])
    flat_all = np.concatenate([part[4] for part in parts])
    union, cols = np.unique(flat_all, return_inverse=True)
    where = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(offsets[-1], len(union)))
    where.sum_duplicates()
    return _Candidates(template=[part[0] for part in parts for _ in range(len(part[1]))],
                       key=np.concatenate([part[1] for part in parts]),
                       firing=np.concatenate([part[2] for part in parts]), where=where, flat=union)


def _greedy(cands: _Candidates, positive: np.ndarray, n_firing: int, min_gain: float) -> tuple[list[int], float]:
    """Indices of the chosen candidates (in choice order) and the final F1. Each step adds the candidate
    whose new tokens raise F1 = 2 TP / (TP + FP + n_firing) the most; ties go to the higher-precision,
    shorter, fewer-wildcard, smaller-key candidate (a fixed order, so results are deterministic)."""
    occurrences = np.diff(cands.where.indptr)
    fixed = np.array([sum(shape) for shape, _ in cands.template])
    length = np.array([len(shape) for shape, _ in cands.template])
    order = np.lexsort((cands.key, -fixed, length, -cands.firing / occurrences))
    where = cands.where[order]
    covered = np.zeros(where.shape[1], dtype=bool)
    available = np.ones(where.shape[0], dtype=bool)
    tp = fp = 0.0
    best_f1, chosen = 0.0, []
    while available.any():
        free = ~covered
        gain_tp = where @ (positive & free).astype(np.float64)
        gain_fp = where @ (~positive & free).astype(np.float64)
        f1 = np.where(available, 2 * (tp + gain_tp) / (tp + gain_tp + fp + gain_fp + n_firing), -1.0)
        pick = int(np.argmax(f1))  # first maximum in tie-break order
        if f1[pick] - best_f1 < min_gain:
            break
        chosen.append(int(order[pick]))
        available[pick] = False
        covered[where.indices[where.indptr[pick]:where.indptr[pick + 1]]] = True
        tp, fp, best_f1 = tp + gain_tp[pick], fp + gain_fp[pick], float(f1[pick])
    return chosen, best_f1
