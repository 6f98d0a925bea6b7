"""Value checks of store columns: which values a column may hold, per table and column (VALUE_CHECKS);
`flows/store/schemas.py::conform` applies them to every frame written."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from score.intervals import INTERVAL_COLUMNS


@dataclass(frozen=True)
class ValueCheck:
    """The values a numeric column may hold; a write with any other value is refused."""

    low: float = -math.inf
    """Smallest allowed value (inclusive)."""
    high: float = math.inf
    """Largest allowed value (inclusive)."""
    nan_ok: bool = False
    """Whether NaN is allowed (e.g. "not computed" for a judge); null is always allowed."""


def refuse_impossible(table: str, frame: pl.DataFrame, checks: dict[str, ValueCheck]) -> None:
    """Raise ValueError naming the table, column, count and first offending value when a column of `frame`
    holds a value its check forbids (out of range, +-inf, or NaN where NaN is not allowed)."""
    for name, check in checks.items():
        if name not in frame.columns:
            continue
        column = pl.col(name).cast(pl.Float64)
        bad = column.is_nan() if not check.nan_ok else pl.lit(False)
        bad = bad | (column.is_not_nan() & ((column < check.low) | (column > check.high)))
        offending = frame.select(pl.col(name).filter(bad.fill_null(False)))[name]
        if offending.len():
            nan = "" if check.nan_ok else ", no NaN"
            raise ValueError(f"table {table!r}: column {name!r} must be in [{check.low}, {check.high}]{nan}; "
                             f"refusing {offending.len()} row(s), first value {offending[0]!r}")


_UNIT_OR_NAN, _NON_NEGATIVE = ValueCheck(0.0, 1.0, nan_ok=True), ValueCheck(0.0)

VALUE_CHECKS: dict[str, dict[str, ValueCheck]] = {
    "scores": {
        **dict.fromkeys(("precision", "recall", "f1", "auroc", "balanced_accuracy", *INTERVAL_COLUMNS), _UNIT_OR_NAN),
        "correlation": ValueCheck(-1.0, 1.0, nan_ok=True),
        "n_tokens": _NON_NEGATIVE, "n_positive": _NON_NEGATIVE,
    },
    "explanations": dict.fromkeys(("prompt_tokens", "completion_tokens", "cost_usd"), _NON_NEGATIVE),
    "latent_stats": dict.fromkeys(("n_active", "n_contexts"), _NON_NEGATIVE),
    "llm_calls": dict.fromkeys(("prompt_tokens", "completion_tokens", "latency_s"), _NON_NEGATIVE),
}
"""Impossible values per (table, column): rejected when written, so a bug (or a damaged part read back and
written again) never reaches a report as an AUROC of 8.85e230. Columns not listed take any value."""


def check_values(table: str, frame: pl.DataFrame) -> None:
    """ValueError when `frame` holds a value its table's VALUE_CHECKS forbid ."""
    refuse_impossible(table, frame, VALUE_CHECKS.get(table, {}))
