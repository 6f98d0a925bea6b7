"""N2G-style explainer: the n-gram patterns that best predict where a latent fires (no LLM).

Mining (explain/explainers/n2g_mining.py) counts every n-gram on every token of the latent's
explain-side contexts when the explainer is given the corpus (`CorpusSource`, what the pipeline
does): precision is then a natural-distribution number, not one measured on windows sampled around
activations. Without a corpus it mines on the records' explain windows (the same algorithm on less
text). The score split is never read either way.

`match_patterns` turns patterns back into per-token predictions; score/'s N2G simulator uses it, so
explainer and simulator share one definition of "matches". `N2GExplainer` implements the `Explainer`
protocol (explain/explainers/base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from explain.explainers.n2g_mining import MinedPattern, MiningResult, mine_patterns, templates
from explain.latents.corpus_index import CorpusIndex
from explain.records import Explanation, LatentRecord

ALGORITHM_VERSION = "n2g-v2"
EXPLAINER_NAME = "n2g"

ActsFn = Callable[[list[int]], pl.DataFrame]
"""latents -> their cached activations: rows (ctx_id i64, pos i32, latent i32, value f32), value > 0."""


class N2GConfig(BaseModel):
    """N2G pattern mining."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    max_n: int = Field(default=3, ge=1)
    """Longest n-gram, in tokens, ending at the activating token."""
    wildcards: bool = True
    """Also mine n-grams with any-token positions: "A [any]" (right after A), "A [any] C", "A B [any]"."""
    lookahead: bool = True
    """Also mine n-grams that cover tokens after the firing one (encoders such as BERT read both sides)."""
    min_precision: float = Field(default=0.3, ge=0.0, le=1.0)
    """A pattern must be followed by activation at least this often on the explain side."""
    min_support: int = Field(default=2, ge=1)
    """A pattern must end at this many activating tokens of the explain side (guards memorising)."""
    min_f1_gain: float = Field(default=0.001, gt=0.0)
    """Stop adding patterns when the best one raises the explain-side F1 by less than this."""
    ignore_case: bool = False
    """Match tokens case-insensitively (uncased tokenizers make this moot)."""


@dataclass
class CorpusSource:
    """The whole corpus for mining: the explainer reads every explain-side context of a latent."""

    index: CorpusIndex
    acts: ActsFn
    seed: int
    """Split seed (the sampling seed: explain/sampling/keys.py::split_of)."""
    explain_fraction: float


WILDCARD_TEXT = "[any]"
"""How a wildcard position (None in a pattern's n-gram) reads in the explanation text."""


def explanation_text(patterns: list[dict]) -> str:
    """Readable form: '"foo" | "bar baz" | "( [any]" | "[[self]] ."' (tokens of an n-gram joined by
    spaces; the predicted token in [[ ]] when the n-gram goes on after it)."""
    return " | ".join('"' + " ".join(_token_text(p, j) for j in range(len(p["ngram"]))) + '"' for p in patterns)


def _token_text(pattern: dict, j: int) -> str:
    token = pattern["ngram"][j]
    text = WILDCARD_TEXT if token is None else token
    at = pattern.get("at", len(pattern["ngram"]) - 1)
    return f"[[{text}]]" if j == at and at != len(pattern["ngram"]) - 1 else text


def match_patterns(patterns: list[dict], tokens: list[str]) -> np.ndarray:
    """Predicted activation per token [len(tokens)]: the largest act of the patterns that predict that
    token, 0 where none does. A pattern predicts the token at index `at` of its n-gram (default: the
    last, so the n-gram ends there); None in an n-gram matches any token; "ignore_case": true matches
    any case. This is the reference the vectorised matcher (score/natural.py) is tested against."""
    pred = np.zeros(len(tokens), dtype=np.float32)
    tables: dict[tuple[tuple[bool, ...], int, bool], dict[tuple[str | None, ...], float]] = {}
    for p in patterns or []:
        fold = bool(p.get("ignore_case"))
        gram = tuple(t if t is None or not fold else t.lower() for t in p["ngram"])
        form = (tuple(t is not None for t in gram), int(p.get("at", len(gram) - 1)), fold)
        table = tables.setdefault(form, {})
        table[gram] = max(table.get(gram, 0.0), float(p["act"]))
    lowered = [t.lower() for t in tokens]
    for (shape, at, fold), table in tables.items():
        n, seq = len(shape), lowered if fold else tokens
        for start in range(len(tokens) - n + 1):
            gram = tuple(t if fixed else None for t, fixed in zip(seq[start:start + n], shape, strict=True))
            act = table.get(gram, 0.0)
            if act > pred[start + at]:
                pred[start + at] = act
    return pred


class N2GExplainer:
    """N-gram explanations of latents from their explain side (the score split is never read)."""

    name = EXPLAINER_NAME

    def __init__(self, config: N2GConfig | None = None, source: CorpusSource | None = None) -> None:
        self.config = config or N2GConfig()
        self.source = source
        if source is not None and self.config.ignore_case:
            self.source = CorpusSource(source.index.folded(), source.acts, source.seed, source.explain_fraction)

    def identity(self) -> dict:
        """The algorithm and its config; whether the corpus was read follows from the run (the pipeline
        always gives it), so it is not part of the key."""
        return {"explainer": self.name, "algorithm": ALGORITHM_VERSION, **self.config.model_dump()}

    def explain_many(self, records: Sequence[LatentRecord]) -> list[Explanation]:
        """One explanation per record, in order (CPU only: no concurrency, no progress bar of its own)."""
        if self.source is None:
            return [self._explanation(record.latent, *self._mine_windows(record)) for record in records]
        acts = self.source.acts([int(r.latent) for r in records])
        by_latent = {key[0]: group for key, group in acts.partition_by("latent", as_dict=True).items()}
        return [self._explanation(r.latent, *self._mine_corpus(r.latent, by_latent.get(r.latent))) for r in records]

    def _mine_corpus(self, latent: int, acts: pl.DataFrame | None) -> tuple[MiningResult, CorpusIndex]:
        """Every explain-side context of the corpus: firing positions from the latent's cached activations."""
        source = self.source
        index = source.index
        readable = index.split_rows(latent, source.seed, source.explain_fraction) == "explain"
        flat, values = np.zeros(0, np.int64), np.zeros(0)
        if acts is not None and acts.height:
            rows = np.searchsorted(index.ctx_ids, acts["ctx_id"].to_numpy())
            flat = rows * index.row_len + acts["pos"].to_numpy()
            keep = (acts["value"].to_numpy() > 0) & readable[rows]
            flat, values = flat[keep], acts["value"].to_numpy()[keep].astype(np.float64)
            flat, first = np.unique(flat, return_index=True)
            values = values[first]
        return self._mine(index, readable, flat, values), index

    def _mine_windows(self, record: LatentRecord) -> tuple[MiningResult, CorpusIndex]:
        """Only the record's explain windows (a caller without the corpus)."""
        windows = record.explain
        index = CorpusIndex.from_windows([e.tokens for e in windows], [e.ctx_id for e in windows])
        if self.config.ignore_case:
            index = index.folded()
        acts = np.zeros(index.token_ids.shape)
        for r, example in enumerate(windows):
            acts[r, :len(example.acts)] = np.asarray(example.acts, dtype=np.float64)
        flat = np.flatnonzero(acts.reshape(-1) > 0)
        return self._mine(index, np.ones(len(windows), dtype=bool), flat, acts.reshape(-1)[flat]), index

    def _mine(self, index: CorpusIndex, readable: np.ndarray, flat: np.ndarray, values: np.ndarray) -> MiningResult:
        cfg = self.config
        return mine_patterns(index, readable, flat, values, templates(cfg.max_n, cfg.wildcards, cfg.lookahead),
                             cfg.min_precision,
                             cfg.min_support, cfg.min_f1_gain)

    def _explanation(self, latent: int, result: MiningResult, index: CorpusIndex) -> Explanation:
        if not result.patterns:
            return Explanation(latent=latent, explainer=self.name, text="", status="failed", error=result.reason,
                               patterns=None if result.n_firing == 0 else [], prompt_version=ALGORITHM_VERSION)
        patterns = _unique_patterns([self._pattern(p, index) for p in result.patterns])
        return Explanation(latent=latent, explainer=self.name, text=explanation_text(patterns),
                           patterns=patterns, prompt_version=ALGORITHM_VERSION)

    def _pattern(self, mined: MinedPattern, index: CorpusIndex) -> dict:
        pattern: dict = {"ngram": [None if i is None else index.token_of[i] for i in mined.token_ids],
                         "act": round(mined.act, 6), "precision": round(mined.precision, 6),
                         "count": mined.occurrences}
        if mined.at != len(mined.token_ids) - 1:
            pattern["at"] = mined.at
        if self.config.ignore_case:
            pattern["ignore_case"] = True
        return pattern


def _unique_patterns(patterns: list[dict]) -> list[dict]:
    """One pattern per n-gram string (two token ids can render alike), highest act first, then by n-gram."""
    best: dict[tuple[str | None, ...], dict] = {}
    for p in patterns:
        key = tuple(p["ngram"])
        if key not in best or p["act"] > best[key]["act"]:
            best[key] = p
    return sorted(best.values(), key=lambda p: (-p["act"], [t or "" for t in p["ngram"]]))


def match_on_index(patterns: list[dict], index: CorpusIndex) -> np.ndarray:
    """`match_patterns` on every row of `index` at once: the predicted activation of each flat position
    [n_rows * row_len] (0 on padding). Vectorised: one binary search per pattern spelling instead of a
    Python loop over tokens (the simulator scores ~100 windows per latent); tested equal to
    `match_patterns`."""
    pred = np.zeros(index.token_ids.size, dtype=np.float32)
    real = index.token_ids.reshape(-1) != index.pad_id
    for p in patterns or []:
        gram, act = p["ngram"], np.float32(p["act"])
        if not gram:  # the empty pattern predicts every token
            pred[real] = np.maximum(pred[real], act)
            continue
        keys = index.spelling_keys(gram, bool(p.get("ignore_case")))
        if len(keys) == 0:
            continue
        shift = len(gram) - 1 - int(p.get("at", len(gram) - 1))
        _, flat = index.occurrences(tuple(t is not None for t in gram), keys)
        np.maximum.at(pred, flat - shift, act)
    return pred
