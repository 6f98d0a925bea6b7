"""Value checks of store columns: which values a column may hold (declared per column in schemas.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl


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
