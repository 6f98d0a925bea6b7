"""The Parquet store: one directory per table, append-only part files, atomic writes.

Layout (a contract, see docs/store.md): `<root>/<table>/**/*.parquet`, readable with
`polars.scan_parquet("<root>/<table>/**/*.parquet")`. A part is written to a hidden temp name unique to
its writer (pid + random tag) and renamed into place, so a crash never leaves a half-written part that
readers would pick up. The parts of one chunk that must commit together (`simulations` with `scores`) are
renamed with the commit part last and share a group tag: readers skip a member whose commit part is
missing (flows/store/recovery.py removes it). Every part that `append` writes has exactly the columns and
dtypes of its table in flows/store/schemas.py, and only allowed values (flows/store/checks.py::VALUE_CHECKS).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import polars as pl

from flows.store.schemas import SCHEMAS, conform, table_schema

TABLES = tuple(SCHEMAS)
"""Every table of the store (declared, with its columns, in flows/store/schemas.py)."""

DEFAULT_STORE = "atlas-store"

COMMIT_PART = {"simulations": "scores", "score_failures": "scores"}
"""Tables whose chunk parts count only once the chunk's part of the commit table is in place."""

GROUP_PREFIX = "g"
"""Tag prefix of the parts of a chunk written together (`Store.append_together`); single parts have none."""


class StoreError(ValueError):
    """The store cannot be read or written (a damaged part, a read-only folder, a full disk).

    A ValueError so the CLI reports it as one line (flows/cli/main.py): the fix is the user's (space,
    permissions, deleting a damaged part), and the message says which file and what to do."""


def default_store_root() -> Path:
    """`$LATENT_ATLAS_STORE`, else `./atlas-store`."""
    return Path(os.environ.get("LATENT_ATLAS_STORE", DEFAULT_STORE))


def temp_name(name: str) -> str:
    """Hidden temporary name of `name` for this writer: its pid (recovery removes a dead pid's leftovers)
    and a random tag (two threads or processes never share a temporary file)."""
    return f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_VERIFIED: dict[tuple[str, int, int], dict[str, pl.DataType]] = {}
"""Schemas of parts whose footer was read, by (path, size, mtime): a part is checked once per process."""


def part_schema(path: Path) -> dict[str, pl.DataType]:
    """The schema in a part's footer; StoreError naming the part when it cannot be read (truncated,
    overwritten, not Parquet)."""
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _VERIFIED:
            _VERIFIED[key] = dict(pl.read_parquet_schema(path))
        return _VERIFIED[key]
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StoreError(f"store part {path} cannot be read ({_first_line(exc)}); delete it and rerun to "
                         "recompute it") from None


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

        The frame must have exactly the table's columns (any order) and allowed values; each is strictly
        cast to its declared dtype and the part is written in the declared order. ValueError otherwise
        (see schemas.conform); StoreError when the store cannot be written.
        """
        directory = self.table_dir(table)
        if frame.height == 0:
            return None
        name = _part_name(part, uuid.uuid4().hex[:12])
        self._write(directory, name, conform(table, frame))
        return directory / name

    def append_together(self, frames: dict[str, pl.DataFrame], part: str | None = None) -> None:
        """Write the parts of one chunk so that they count together or not at all.

        `frames` is ordered: the last table is the commit part (written even when empty), every other
        one must have it as its `COMMIT_PART`. All parts are written to temporary names first, then
        renamed in order, the commit part last; a reader skips a member part whose commit part is not
        there (a kill between the renames), and the next run's recovery removes it.
        """
        *members, commit = frames
        if any(COMMIT_PART.get(table) != commit for table in members):
            raise ValueError(f"tables {members} do not commit with {commit!r} (flows/store/store.py::COMMIT_PART)")
        if all(frames[table].height == 0 for table in members) and frames[commit].height == 0:
            return
        name = _part_name(part, GROUP_PREFIX + uuid.uuid4().hex[:11])
        staged = [(self.table_dir(table), conform(table, frames[table])) for table in frames]
        staged = [(d, f) for d, f in staged[:-1] if f.height] + [staged[-1]]
        temps = [self._stage(directory, name, frame) for directory, frame in staged]
        done: list[Path] = []
        try:
            for tmp in temps:
                os.replace(tmp, tmp.parent / name)
                done.append(tmp.parent / name)
        except OSError as exc:
            for path in [*done[::-1], *temps]:  # nothing of a failed chunk stays: the rerun redoes it whole
                path.unlink(missing_ok=True)
            raise StoreError(f"cannot write to store {self.root}: {_first_line(exc)}") from None

    def ensure_table(self, table: str) -> None:
        """Give a table with no parts one empty part with its declared schema, so readers find its columns."""
        directory = self.table_dir(table)
        if not self.has(table):
            self._write(directory, "empty.parquet", table_schema(table).empty())

    def ensure_tables(self) -> None:
        """Every table of the contract exists afterwards (an empty part where a table has none)."""
        for table in TABLES:
            self.ensure_table(table)

    def _write(self, directory: Path, name: str, frame: pl.DataFrame) -> None:
        # Temp name, then one rename: readers glob `*.parquet` and never see a partial part.
        tmp = self._stage(directory, name, frame)
        try:
            os.replace(tmp, directory / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write to store {self.root}: {_first_line(exc)}") from None

    def _stage(self, directory: Path, name: str, frame: pl.DataFrame) -> Path:
        """`frame` written to this writer's temporary name for `directory/name`; on failure (read-only
        store, full disk) the temporary file is removed and a one-line StoreError raised."""
        tmp = directory / temp_name(name)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(tmp)
        except (OSError, pl.exceptions.PolarsError) as exc:
            try:
                tmp.unlink(missing_ok=True)  # no zero-byte or partial temp part left behind
            except OSError:
                pass  # a read-only store never had it; recovery removes it otherwise
            raise StoreError(f"cannot write to store {self.root}: {_first_line(exc)}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def parts(self, table: str) -> list[Path]:
        """Finished parts of `table`, oldest first within one name prefix; chunk parts whose commit part
        is missing are left out (they never committed)."""
        directory = self.table_dir(table)
        found = sorted(directory.rglob("*.parquet")) if directory.exists() else []
        if table in COMMIT_PART:
            committed = self.group_tags(COMMIT_PART[table])
            found = [p for p in found if not is_group_part(p) or part_tag(p) in committed]
        return found

    def group_tags(self, table: str) -> set[str]:
        """Group tags of the parts of `table` in place (the committed chunks, for the commit table)."""
        directory = self.table_dir(table)
        if not directory.exists():
            return set()
        return {part_tag(p) for p in directory.rglob("*.parquet") if is_group_part(p)}

    def has(self, table: str) -> bool:
        return bool(self.parts(table))

    def scan(self, table: str) -> pl.LazyFrame:
        """Lazy view over every finished part of `table` (raises if the table has no parts).

        Parts written by different versions may differ in columns (a column added later): the view has
        the union of their columns, null where a part lacks one. A part whose footer cannot be read is
        named in a StoreError.
        """
        parts = self.parts(table)
        if not parts:
            raise FileNotFoundError(f"table {table!r} is empty in store {self.root}")
        return scan_parts(parts)

    def read(self, table: str) -> pl.DataFrame:
        """Whole table as a DataFrame; with no parts yet, an empty frame with the table's declared columns
        (so `.filter(pl.col(...))` on it works). A part that cannot be decoded is named in a StoreError."""
        if not self.has(table):
            return table_schema(table).empty()
        try:
            return self.scan(table).collect()
        except pl.exceptions.PolarsError:
            for part in self.parts(table):  # which part: read each alone
                try:
                    pl.read_parquet(part)
                except (OSError, pl.exceptions.PolarsError) as exc:
                    raise StoreError(f"store part {part} cannot be read ({_first_line(exc)}); delete it and "
                                     "rerun to recompute it") from None
            raise

    def sae_dir(self, sae_id: str) -> Path:
        return self.root / "saes" / sae_id

    def reports_dir(self) -> Path:
        return self.root / "reports"

    def cache_dir(self, name: str) -> Path:
        """Scratch directories the store owns (activation files, LLM response cache)."""
        path = self.root / "cache" / name
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.root}: {_first_line(exc)}") from None
        return path


def scan_parts(parts: list[Path]) -> pl.LazyFrame:
    """Lazy view over `parts` (footers checked, union of their columns); StoreError names a damaged part."""
    schema: dict[str, pl.DataType] = {}
    for part in parts:
        for name, dtype in part_schema(part).items():
            schema.setdefault(name, dtype)
    return pl.scan_parquet(parts, schema=schema, missing_columns="insert")


def _part_name(prefix: str | None, tag: str) -> str:
    # The nanosecond clock in hex keeps one prefix's parts in write order when sorted by name.
    return f"{prefix or 'part'}-{time.time_ns():016x}-{tag}.parquet"


def part_tag(path: Path) -> str:
    """The random tag that ends a part's name (the group tag for the parts of one chunk)."""
    return path.name.removesuffix(".parquet").rsplit("-", 1)[-1]


def is_group_part(path: Path) -> bool:
    tag = part_tag(path)
    return tag.startswith(GROUP_PREFIX) and len(tag) == 12
