"""The Parquet store: tables (schemas.py), ids of what is stored (ids.py), row conversions (rows.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.store.store import DEFAULT_STORE, TABLES, Store, default_store_root

__all__ = ["DEFAULT_STORE", "TABLES", "Store", "default_store_root"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m flows.store.schemas` runs the module once (not also as a
    # submodule the package imported first, which runpy warns about).
    if name in __all__:
        from flows.store import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
