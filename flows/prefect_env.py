"""Prefect defaults for an offline, per-project run; imported before prefect itself.

Telemetry is off (no network here, and the server logs errors trying), and tasks don't hash their
inputs for caching: the store's rows are our resume state, not Prefect's cache (docs/architecture.md, "Prefect").
Each default only applies when the user has not set the variable.
"""

import os

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_TASKS_DEFAULT_NO_CACHE": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}

for _name, _value in _DEFAULTS.items():
    os.environ.setdefault(_name, _value)
