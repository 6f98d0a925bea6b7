"""Valid rows of any store table, for tests that write to a store without running the pipeline."""

from __future__ import annotations

import polars as pl

from flows.store.schemas import table_schema


def _value(dtype: pl.DataType, i: int):
    if dtype == pl.String:
        return f"s{i}"
    if dtype.is_integer():
        return i
    if dtype.is_float():
        return 0.5
    if isinstance(dtype, pl.List):
        return [_value(dtype.inner, i)]
    return None  # datetimes and the rest: null is always allowed


def rows(table: str, n: int, **fixed) -> pl.DataFrame:
    """`n` rows of `table` with distinct keys (integer and string columns count up) and `fixed` values."""
    schema = table_schema(table).schema
    data = {name: [fixed.get(name, _value(dtype, i)) for i in range(n)] for name, dtype in schema.items()}
    return pl.DataFrame(data, schema=schema)
