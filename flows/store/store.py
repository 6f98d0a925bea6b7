"""The Parquet store: one directory per table, append-only part files, atomic writes.

Layout (a contract, see docs/store.md): `<root>/<table>/**/*.parquet`, readable with
`polars.scan_parquet("<root>/<table>/**/*.parquet")`. A part is written to a hidden temp name and
renamed into place, so a crash never leaves a half-written part that readers would pick up. Every part
that `append` writes has exactly the columns and dtypes of its table in flows/store/schemas.py.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl

from flows.store.schemas import SCHEMAS, conform, table_schema

TABLES = tuple(SCHEMAS)
"""Every table of the store (declared, with its columns, in flows/store/schemas.py)."""

DEFAULT_STORE = "atlas-store"


def default_store_root() -> Path:
    """`$LATENT_ATLAS_STORE`, else `./atlas-store`."""
    return Path(os.environ.get("LATENT_ATLAS_STORE", DEFAULT_STORE))


class Store:
    """Append-only Parquet tables under one root directory."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_root()

    def table_dir(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")
        return self.root / table

    def append(self, table: str, frame: pl.DataFrame, part: str | None = None) -> Path | None:
        """Write `frame` as a new part of `table` (nothing for an empty frame). Returns the part path.

        The frame must have exactly the table's columns (any order); each is strictly cast to its declared
        dtype and the part is written in the declared order. ValueError otherwise (see schemas.conform).
        """
        directory = self.table_dir(table)
        if frame.height == 0:
            return None
        name = f"{part or 'part'}-{uuid.uuid4().hex[:12]}.parquet"
        self._write(directory, name, conform(table, frame))
        return directory / name

    def ensure_table(self, table: str) -> None:
        """Give a table with no parts one empty part with its declared schema, so readers find its columns."""
        directory = self.table_dir(table)
        if not self.has(table):
            self._write(directory, "empty.parquet", table_schema(table).empty())

    def ensure_tables(self) -> None:
        """Every table of the contract exists afterwards (an empty part where a table has none)."""
        for table in TABLES:
            self.ensure_table(table)

    @staticmethod
    def _write(directory: Path, name: str, frame: pl.DataFrame) -> None:
        # Hidden temp name, then one rename: readers glob `*.parquet` and never see a partial part.
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{name}.tmp"
        frame.write_parquet(tmp)
        os.replace(tmp, directory / name)

    def parts(self, table: str) -> list[Path]:
        directory = self.table_dir(table)
        return sorted(directory.rglob("*.parquet")) if directory.exists() else []

    def has(self, table: str) -> bool:
        return bool(self.parts(table))

    def scan(self, table: str) -> pl.LazyFrame:
        """Lazy view over every finished part of `table` (raises if the table has no parts).

        Parts written by different versions may differ in columns (a column added later): the view has
        the union of their columns, null where a part lacks one.
        """
        parts = self.parts(table)
        if not parts:
            raise FileNotFoundError(f"table {table!r} is empty in store {self.root}")
        schema: dict[str, pl.DataType] = {}
        for part in parts:
            for name, dtype in pl.read_parquet_schema(part).items():
                schema.setdefault(name, dtype)
        return pl.scan_parquet(parts, schema=schema, missing_columns="insert")

    def read(self, table: str) -> pl.DataFrame:
        """Whole table as a DataFrame; an empty frame when the table has no parts yet."""
        return self.scan(table).collect() if self.has(table) else pl.DataFrame()

    def sae_dir(self, sae_id: str) -> Path:
        return self.root / "saes" / sae_id

    def reports_dir(self) -> Path:
        return self.root / "reports"

    def cache_dir(self, name: str) -> Path:
        """Scratch directories the store owns (activation files, LLM response cache)."""
        path = self.root / "cache" / name
        path.mkdir(parents=True, exist_ok=True)
        return path
