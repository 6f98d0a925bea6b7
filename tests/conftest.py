"""Shared fixtures. Prefect gets its own home per session and one test server (PREFECT_NOTES.md)."""

from __future__ import annotations

import os
import tempfile

import pytest

# Before anything imports prefect: a private PREFECT_HOME, no telemetry.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="latent-atlas-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session; only integration tests ask for it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
