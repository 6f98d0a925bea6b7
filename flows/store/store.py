"""The Parquet store: one directory per table, append-only part files, atomic writes.

Layout (a contract, see ARCHITECTURE.md): `<root>/<table>/*.parquet`, readable with
`polars.scan_parquet("<root>/<table>/**/*.parquet")`. A part is written to a hidden temp name and
renamed into place, so a crash never leaves a half-written part that readers would pick up.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl

TABLES = (
    "runs",
    "contexts",
    "latent_stats",
    "latent_acts",
    "examples",
    "explanations",
    "simulations",
    "scores",
    "llm_calls",
)

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
        """Write `frame` as a new part of `table` (nothing for an empty frame). Returns the part path."""
        if frame.height == 0:
            return None
        directory = self.table_dir(table)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{part or 'part'}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = directory / f".{name}.tmp"
        frame.write_parquet(tmp)
        os.replace(tmp, directory / name)
        return directory / name

    def ensure_table(self, table: str, schema: dict[str, pl.DataType]) -> None:
        """Give an empty table one empty part with its schema, so every table of the contract exists."""
        if not self.has(table):
            directory = self.table_dir(table)
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / ".empty.parquet.tmp"
            pl.DataFrame(schema=schema).write_parquet(tmp)
            os.replace(tmp, directory / "empty.parquet")

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
