"""Per-latent records: what an explainer sees and what a scorer checks.

These dataclasses are the hand-off between sampling (explain/sampling/examples.py), explainers
(explain/explainers/n2g.py, explain/explainers/llm.py) and simulators/scorers (score/). They hold plain
Python and numpy values only, so they pickle cheaply across Prefect/Dask workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import polars as pl

Split = Literal["explain", "score"]
ExampleKind = Literal["activating", "random", "similar"]


@dataclass(frozen=True)
class Example:
    """One context window shown to an explainer or scored by a simulator.

    `tokens` and `acts` are aligned: acts[i] is the latent's activation on tokens[i] ([window]).
    """

    ctx_id: int
    tokens: list[str]
    acts: np.ndarray
    kind: ExampleKind
    quantile: int = -1
    """Activation-quantile bin (0 = weakest decile .. 9 = top) for activating examples, -1 otherwise."""
    token_ids: list[int] = field(default_factory=list)
    weight: float | None = None
    """Score examples: natural (score-side) tokens each of the window's tokens stands for
    (explain/sampling/weights.py); None for explain examples and where no weight is known."""

    @property
    def is_activating(self) -> bool:
        return bool(np.any(self.acts > 0))


@dataclass
class LatentRecord:
    """Everything known about one latent: its statistics and its two disjoint example sets."""

    sae_id: str
    latent: int
    explain: list[Example]
    score: list[Example]
    max_act: float = 0.0
    frequency: float = 0.0

    def assert_disjoint(self) -> None:
        """Raise if an explain context is also a score context (a leak that inflates scores)."""
        shared = {e.ctx_id for e in self.explain} & {e.ctx_id for e in self.score}
        if shared:
            raise ValueError(f"latent {self.latent}: explain/score share ctx_ids {sorted(shared)[:5]}")


ExplanationStatus = Literal["ok", "failed", "skipped"]


@dataclass
class Explanation:
    """An explainer's answer for one latent; failures are kept as rows, never dropped."""

    latent: int
    explainer: str
    text: str
    status: ExplanationStatus = "ok"
    error: str = ""
    model: str = ""
    prompt_version: str = ""
    patterns: list[dict] | None = None
    """Machine-readable form (N2G: [{"ngram": [...], "act": float, "precision": float, "count": int,
    "at": int (optional)}, ...]: None in an n-gram is any token, `at` the predicted token's index, default
    the last); None for free text."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def patterns_json(self) -> str:
        return json.dumps(self.patterns) if self.patterns is not None else ""


def build_latent_records(examples: pl.DataFrame, contexts: pl.DataFrame,
                         stats: pl.DataFrame) -> list[LatentRecord]:
    """Examples table rows (explain/sampling/examples.py) -> one LatentRecord per latent, sorted by latent.

    examples: sae_id, latent, split, kind, quantile, ctx_id, start, acts (list[f32], [window]) and
    optionally weight (f64; null or absent: no weight, e.g. examples sampled before weights existed).
    contexts: ctx_id, token_ids (list[int]), tokens (list[str]); tokens of an example are
    contexts.tokens[start : start + len(acts)]. stats: latent_stats rows (max_act, frequency).
    Token strings are shared between examples (one str object per distinct token).
    """
    import polars as pl  # local: records stay importable without polars for plain consumers

    if examples.height == 0:
        return []
    windows = (
        examples.lazy()
        .with_row_index("_row")
        .join(contexts.lazy().select("ctx_id", "token_ids"), on="ctx_id", how="left")
        .with_columns(pl.col("token_ids").list.slice(pl.col("start"), pl.col("acts").list.len()))
        .collect(engine="streaming")
        .sort("_row")
    )
    if "weight" not in windows.columns:
        windows = windows.with_columns(pl.lit(None, dtype=pl.Float64).alias("weight"))
    lengths = windows["acts"].list.len().to_numpy()
    bounds = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).tolist()
    flat_acts = windows["acts"].explode().to_numpy().astype(np.float32)
    flat_ids = windows["token_ids"].explode().to_numpy().astype(np.int64)
    # Shared objects: one str / int per vocabulary entry, fancy-indexed in C (windows repeat tokens a lot).
    token_of, id_of = _vocab_tables(contexts, int(flat_ids.max(initial=0)) + 1)
    flat_tokens = token_of[flat_ids]
    flat_id_objs = id_of[flat_ids]
    info = {row[0]: row[1:] for row in stats.select("latent", "max_act", "frequency").iter_rows()}
    records: dict[int, LatentRecord] = {}
    columns = ["sae_id", "latent", "split", "kind", "quantile", "ctx_id", "weight"]
    for row, (sae_id, latent, split, kind, quantile, ctx_id, weight) in enumerate(
            windows.select(columns).iter_rows()):
        record = records.get(latent)
        if record is None:
            max_act, frequency = info.get(latent, (0.0, 0.0))
            record = records[latent] = LatentRecord(sae_id=sae_id, latent=int(latent), explain=[], score=[],
                                                    max_act=float(max_act or 0.0),
                                                    frequency=float(frequency or 0.0))
        lo, hi = bounds[row], bounds[row + 1]
        example = Example(ctx_id=int(ctx_id), tokens=flat_tokens[lo:hi].tolist(), acts=flat_acts[lo:hi].copy(),
                          kind=kind, quantile=int(quantile), token_ids=flat_id_objs[lo:hi].tolist(),
                          weight=None if weight is None else float(weight))
        (record.explain if split == "explain" else record.score).append(example)
    for record in records.values():
        record.assert_disjoint()
    return [records[latent] for latent in sorted(records)]


def _vocab_tables(contexts: pl.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Object arrays [size]: token string and int object of every token id found in `contexts`."""
    import polars as pl

    pairs = (
        contexts.lazy()
        .select(pl.col("token_ids").explode().alias("id"), pl.col("tokens").explode().alias("token"))
        .unique()
        .collect(engine="streaming")
    )
    if pairs["id"].n_unique() != pairs.height:
        raise ValueError("contexts map one token id to several token strings")
    token_of = np.full(max(size, int(pairs["id"].max() or 0) + 1), "", dtype=object)
    token_of[pairs["id"].to_numpy()] = np.array(pairs["token"].to_list(), dtype=object)
    return token_of, np.arange(len(token_of)).astype(object)
