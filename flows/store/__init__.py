"""The Parquet store: tables (schemas.py), ids of what is stored (ids.py), row conversions (rows.py)."""

from flows.store.store import DEFAULT_STORE, TABLES, Store, default_store_root

__all__ = ["DEFAULT_STORE", "TABLES", "Store", "default_store_root"]
