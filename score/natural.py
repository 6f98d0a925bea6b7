"""Natural-distribution scores of pattern explanations: every held-out token of the corpus, exactly.

The sampled score set over-represents activating contexts (that is its job: cover every activation
decile), so precision measured on it is inflated against what a reader means: "when the explanation
says the latent fires, does it?" on ordinary text. For a pattern explanation (N2G patterns, the
top-token and always-on baselines) no sampling is needed: the patterns are matched on every token of
every held-out context and compared with the cached activations, so the natural population's
precision, recall, F1, AUROC and correlation are exact.

Held out means not in the latent's explain split: a context belongs to exactly one split per latent,
fixed by a seeded hash before anything is drawn (explain/sampling/keys.py::split_of), and the explainer
only ever sees examples from the explain side.

Matching is vectorised (explain/latents/corpus_index.py): every n-gram of the corpus, of every shape
the patterns use (wildcards included), is packed into one int64 key and sorted once, and each
pattern's key is looked up with a binary search, so the cost is O(corpus log corpus + matches)
whatever the number of latents. The
predicted activation of a token is the largest act of the patterns ending there (as
explain/explainers/n2g.py::match_patterns, which the tests use as the brute-force oracle); a pattern
with an empty n-gram matches every token (the always-on baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from explain.latents.corpus_index import CorpusIndex, shape_of
from explain.records import Explanation, LatentRecord
from explain.sampling.keys import split_of
from score.base import ScoreOutcome
from score.deciles import N_DECILES, decile_recall
from score.intervals import prf_intervals
from score.metrics import clamp

TruthFn = Callable[[list[int]], pl.DataFrame]
"""latents -> their cached activations: rows (ctx_id i64, pos i32, latent i32, value f32), value > 0."""


@dataclass
class HeldOutCorpus:
    """The corpus index (explain/latents/corpus_index.py) and each latent's held-out (score-side) contexts."""

    index: CorpusIndex
    seed: int
    explain_fraction: float

    @classmethod
    def from_contexts(cls, contexts: pl.DataFrame, seed: int, explain_fraction: float) -> HeldOutCorpus:
        """From `contexts` rows (ctx_id, token_ids, tokens) of one dataset."""
        return cls(CorpusIndex.from_contexts(contexts), seed, explain_fraction)

    @property
    def ctx_ids(self) -> np.ndarray:
        """[n_contexts] int64 context ids, ascending."""
        return self.index.ctx_ids

    @property
    def ctx_len(self) -> int:
        return self.index.row_len

    def held_out(self, latent: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """bool [n]: whether context row rows[i] is held out (score side) for latent[i]."""
        return split_of(self.seed, latent, self.ctx_ids[rows], self.explain_fraction) == "score"

    def n_held_out(self, latents: np.ndarray) -> np.ndarray:
        """[len(latents)] number of held-out contexts of each latent."""
        rows = np.arange(len(self.ctx_ids))
        return np.array([int(self.held_out(np.full(len(rows), lat), rows).sum()) for lat in latents], np.int64)


def pattern_table(explanations: Sequence[Explanation], corpus: HeldOutCorpus) -> pl.DataFrame:
    """One row per (latent, pattern, token-id spelling): latent, shape (`_shape_code`), shift (how many
    tokens the n-gram ends after the one it predicts: n - 1 - at), key, act.
    Patterns naming a token the corpus never has cannot match and are left out; `ignore_case` patterns
    match every casing; None in an n-gram is a wildcard (any token)."""
    index = corpus.index
    rows: list[tuple[int, str, int, int, float]] = []
    for explanation in explanations:
        for pattern in explanation.patterns or []:
            gram = pattern["ngram"]
            keys = index.spelling_keys(gram, bool(pattern.get("ignore_case"))) if gram else np.zeros(1, np.int64)
            shift = len(gram) - 1 - int(pattern.get("at", len(gram) - 1))
            code = _shape_code(shape_of(gram))
            rows += [(int(explanation.latent), code, shift, int(key), float(pattern["act"])) for key in keys]
    return pl.DataFrame(rows, schema={"latent": pl.Int64, "shape": pl.String, "shift": pl.Int64, "key": pl.Int64,
                                      "act": pl.Float64}, orient="row")


def _shape_code(shape: tuple[bool, ...]) -> str:
    """A shape as a string column value: "x" per fixed position, "_" per wildcard ("" = empty pattern)."""
    return "".join("x" if fixed else "_" for fixed in shape)


def predictions(patterns: pl.DataFrame, corpus: HeldOutCorpus) -> pl.DataFrame:
    """Held-out tokens where a latent's non-empty patterns fire: latent, flat, p (the largest act).

    Empty patterns (every token) are not expanded here, see `floors`."""
    parts = []
    for (code,), group in patterns.filter(pl.col("shape") != "").group_by("shape"):
        latent, key, act, shift = (group[c].to_numpy() for c in ("latent", "key", "act", "shift"))
        which, flat = corpus.index.occurrences(tuple(ch == "x" for ch in code), key)
        parts.append(pl.DataFrame({"latent": latent[which], "flat": flat - shift[which], "p": act[which]}))
    if not parts:
        return pl.DataFrame(schema={"latent": pl.Int64, "flat": pl.Int64, "p": pl.Float64})
    matched = pl.concat(parts).group_by("latent", "flat").agg(pl.col("p").max())
    return _held_out_rows(matched, corpus)


def floors(patterns: pl.DataFrame) -> dict[int, float]:
    """Per latent, the act its empty patterns predict on every token (absent when it has none)."""
    empty = patterns.filter(pl.col("shape") == "").group_by("latent").agg(pl.col("act").max())
    return dict(zip(empty["latent"].to_list(), empty["act"].to_list(), strict=True))


def truth_rows(acts: pl.DataFrame, corpus: HeldOutCorpus) -> pl.DataFrame:
    """Held-out active tokens: latent, flat, t (the activation), from cache rows (ctx_id, pos, latent, value)."""
    rows = np.searchsorted(corpus.ctx_ids, acts["ctx_id"].to_numpy())
    flat = rows * corpus.ctx_len + acts["pos"].to_numpy()
    frame = pl.DataFrame({"latent": acts["latent"].cast(pl.Int64), "flat": flat, "t": acts["value"].cast(pl.Float64)})
    return _held_out_rows(frame.filter(pl.col("t") > 0), corpus)


def _held_out_rows(frame: pl.DataFrame, corpus: HeldOutCorpus) -> pl.DataFrame:
    rows = frame["flat"].to_numpy() // corpus.ctx_len
    return frame.filter(pl.Series(corpus.held_out(frame["latent"].to_numpy(), rows)))


def natural_scores(pred: pl.DataFrame, truth: pl.DataFrame, n_tokens: Mapping[int, int],
                   floor: Mapping[int, float] | None = None, ctx_len: int = 1, seed: int = 0) -> dict[int, dict]:
    """Exact metrics per latent over its `n_tokens[latent]` held-out tokens: precision, recall, f1 (of
    p > 0 vs t > 0), auroc, correlation, and bootstrap intervals of the first three over contexts
    (`ctx_len` tokens each; seeded per latent). Tokens in neither frame are truly 0 and predicted
    `floor[latent]` (0 unless the latent has an empty, match-everything pattern)."""
    floor = dict(floor or {})
    floor_frame = pl.DataFrame({"latent": list(n_tokens), "floor": [float(floor.get(k, 0.0)) for k in n_tokens]},
                               schema={"latent": pl.Int64, "floor": pl.Float64})
    both = (pred.join(truth, on=["latent", "flat"], how="full", coalesce=True)
            .join(floor_frame, on="latent", how="left")
            .with_columns(pl.max_horizontal(pl.col("p").fill_null(0.0), pl.col("floor")).alias("p"),
                          pl.col("t").fill_null(0.0)))
    both = both.sort("latent", "flat")
    sums = _group_sums(both)
    levels = both.group_by("latent", "p").agg(pos=(pl.col("t") > 0).sum(), neg=(pl.col("t") <= 0).sum())
    by_latent = {lat: group.sort("p") for (lat,), group in levels.group_by("latent")}
    units = both.group_by("latent", pl.col("flat") // ctx_len).agg(
        tp=((pl.col("p") > 0) & (pl.col("t") > 0)).sum(), n_pred=(pl.col("p") > 0).sum(),
        n_true=(pl.col("t") > 0).sum())
    # contexts in a fixed order: each takes its row of the shared bootstrap weight pool
    units_of = {key[0]: group.sort("flat") for key, group in units.partition_by("latent", as_dict=True).items()}
    deciles = _decile_recalls(both)
    out: dict[int, dict] = {}
    for row in sums.iter_rows(named=True):
        latent = int(row["latent"])
        n, base = int(n_tokens[latent]), float(floor.get(latent, 0.0))
        unseen = n - int(row["rows"])  # predicted `base`, truly 0
        tp, n_true = int(row["tp"]), int(row["n_true"])
        n_pred = int(row["n_pred"]) + (unseen if base > 0 else 0)
        out[latent] = {
            "precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_true if n_true else 0.0,
            "f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0,
            "auroc": _auroc(by_latent[latent], unseen, base, n, n_true),
            "correlation": _pearson(n, row["sp"] + unseen * base, row["spp"] + unseen * base * base, row["st"],
                                    row["stt"], row["spt"]),
            "n_tokens": n, "n_positive": n_true,
            **_intervals(units_of[latent], n // ctx_len, ctx_len, base > 0, seed),
            "decile_recall": deciles.get(latent, [None] * N_DECILES),
        }
    return out


def _decile_recalls(both: pl.DataFrame) -> dict[int, list[float | None]]:
    """Per latent, recall in each activation decile of its held-out active tokens (score/deciles.py);
    `both` is sorted by (latent, flat), so each latent's active tokens are one slice."""
    active = both.filter(pl.col("t") > 0)
    latent = active["latent"].to_numpy()
    t, hit = active["t"].to_numpy(), active["p"].to_numpy() > 0
    ids, starts = np.unique(latent, return_index=True)
    ends = np.append(starts[1:], len(latent))
    return {int(i): decile_recall(t[a:b], hit[a:b]) for i, a, b in zip(ids, starts, ends, strict=True)}


def _intervals(units: pl.DataFrame, n_contexts: int, ctx_len: int, always: bool, seed: int) -> dict:
    """Bootstrap intervals over the latent's held-out contexts. Contexts absent from `units` hold no
    active or predicted token, unless the latent predicts every token (`always`): then each context
    predicts all ctx_len tokens and they are units too."""
    tp, n_true = units["tp"].to_numpy(), units["n_true"].to_numpy()
    n_pred = units["n_pred"].to_numpy()
    if always:
        missing = max(n_contexts - len(tp), 0)
        n_pred = np.full(len(tp) + missing, ctx_len)
        tp, n_true = np.concatenate([n_true, np.zeros(missing)]), np.concatenate([n_true, np.zeros(missing)])
    return prf_intervals(tp.astype(np.float64), n_pred.astype(np.float64), n_true.astype(np.float64), seed)


def _group_sums(both: pl.DataFrame) -> pl.DataFrame:
    """Per latent: rows, tp, n_pred, n_true and the float sums of Pearson's r, over rows sorted by
    (latent, flat). Summed in numpy in that fixed order: polars' parallel group sums add floats in an
    order that varies from run to run, and identical inputs must give bit-identical scores."""
    latent = both["latent"].to_numpy()
    p, t = both["p"].to_numpy(), both["t"].to_numpy()
    if len(latent) == 0:
        return pl.DataFrame(schema={k: pl.Float64 for k in ("latent", "rows", "tp", "n_pred", "n_true", "sp", "spp",
                                                            "st", "stt", "spt")})
    ids, starts = np.unique(latent, return_index=True)
    columns = {"tp": (p > 0) & (t > 0), "n_pred": p > 0, "n_true": t > 0, "sp": p, "spp": p * p, "st": t,
               "stt": t * t, "spt": p * t}
    sums = {name: np.add.reduceat(values.astype(np.float64), starts) for name, values in columns.items()}
    return pl.DataFrame({"latent": ids, "rows": np.diff(np.append(starts, len(latent))), **sums})


def _auroc(levels: pl.DataFrame, unseen: int, base: float, n: int, n_true: int) -> float:
    """Mann-Whitney AUROC from counts of positives and negatives per predicted value (ties count 1/2);
    the `unseen` tokens are negatives predicted `base`."""
    n_neg = n - n_true
    if n_true == 0 or n_neg == 0:
        return math.nan
    p = np.append(levels["p"].to_numpy(), base)
    pos = np.append(levels["pos"].to_numpy(), 0).astype(np.float64)
    neg = np.append(levels["neg"].to_numpy(), unseen).astype(np.float64)
    values, group = np.unique(p, return_inverse=True)  # ascending predicted values
    pos, neg = np.bincount(group, pos, len(values)), np.bincount(group, neg, len(values))
    below = np.cumsum(neg) - neg
    return clamp(float((pos * (below + 0.5 * neg)).sum() / (n_true * n_neg)))


def _pearson(n: int, sp: float, spp: float, st: float, stt: float, spt: float) -> float:
    var_p, var_t = n * spp - sp * sp, n * stt - st * st
    if var_p <= 0 or var_t <= 0:
        return math.nan
    return clamp(float((n * spt - sp * st) / math.sqrt(var_p * var_t)), -1.0)


class NaturalPatternScorer:
    """Scorer protocol (score/base.py): pattern explanations scored on every held-out token, exactly.

    `truth(latents)` gives the cached activations of those latents (the flows read `latent_acts`).
    Explanations without patterns (free text) are "skipped": they need a simulator and the sampled set.
    """

    name = "simulation"
    population = "natural"

    def __init__(self, corpus: HeldOutCorpus, truth: TruthFn) -> None:
        self.corpus, self.truth = corpus, truth

    def identity(self) -> dict:
        return {"scorer": self.name, "population": self.population, "matcher": "n-gram patterns, exact",
                "threshold": 0.0}

    def score_many(self, explanations: Sequence[Explanation],
                   records: Mapping[int, LatentRecord]) -> list[ScoreOutcome]:
        """One outcome per explanation, in order (records are not needed: the population is the corpus)."""
        scorable = [e for e in explanations if e.ok and e.patterns is not None]
        latents = sorted({int(e.latent) for e in scorable})
        metrics: dict[int, dict] = {}
        if latents:
            patterns = pattern_table(scorable, self.corpus)
            pred = predictions(patterns, self.corpus)
            truth = truth_rows(self.truth(latents), self.corpus)
            held = self.corpus.n_held_out(np.array(latents)) * self.corpus.ctx_len
            n_tokens = dict(zip(latents, held.tolist(), strict=True))
            metrics = natural_scores(pred, truth, n_tokens, floors(patterns), self.corpus.ctx_len,
                                     self.corpus.seed)
            empty = prf_intervals(np.zeros(0), np.zeros(0), np.zeros(0), 0)
            for latent in set(latents) - set(metrics):  # no match and no activation on held-out text
                metrics[latent] = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "auroc": math.nan,
                                   "correlation": math.nan, "n_tokens": n_tokens[latent], "n_positive": 0, **empty,
                                   "decile_recall": [None] * N_DECILES}
        return [self._outcome(e, metrics) for e in explanations]

    def _outcome(self, explanation: Explanation, metrics: dict[int, dict]) -> ScoreOutcome:
        outcome = ScoreOutcome(int(explanation.latent), explanation.explainer, self.name, "skipped")
        if not explanation.ok or explanation.patterns is None:
            outcome.error = (f"explanation {explanation.status}" if not explanation.ok
                             else "free-text explanation: no patterns to match on the corpus")
            return outcome
        outcome.status = "ok"
        outcome.score_rows = [{"latent": outcome.latent, "explainer": outcome.explainer, "scorer": self.name,
                               **metrics[outcome.latent], "threshold": 0.0, "balanced_accuracy": math.nan,
                               "population": self.population, "mode": "patterns", "estimator": "exact"}]
        return outcome
