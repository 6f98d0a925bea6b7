"""Prefect flows, the Parquet store, the CLI, reports. The only package that knows about Prefect."""

from flows import prefect_env as _prefect_env  # noqa: F401  (must run before prefect is imported)
