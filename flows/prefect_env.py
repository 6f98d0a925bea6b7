"""Prefect defaults for an offline, per-project run; imported before prefect itself.

Telemetry is off (no network here, and the server logs errors trying), and tasks don't hash their
inputs for caching: the store's rows are our resume state, not Prefect's cache (docs/architecture.md, "Prefect").
Each default only applies when the user has not set the variable.

The temporary Prefect server a run starts (when no PREFECT_API_URL is set) is made to live and die with
the run (docs/reliability.md, "Crash safety and concurrency"):
- it runs in its own session, so a Ctrl-C in the terminal (SIGINT to the whole foreground process group)
  reaches only the run, which then reports to a server still alive and exits in seconds, instead of the
  server dying first and the engine retrying its API for minutes;
- a watchdog thread inside it exits it when its parent is gone, so a kill -9 of the run leaves no
  orphaned server. The patch is applied when Prefect imports its server module (an import hook), so a
  command that never starts a server pays nothing for it.
"""

import importlib.abc
import importlib.machinery
import os
import signal
import subprocess
import sys
import threading
import time

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_TASKS_DEFAULT_NO_CACHE": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}

for _name, _value in _DEFAULTS.items():
    os.environ.setdefault(_name, _value)

SERVER_MODULE = "prefect.server.api.server"
"""Where Prefect starts its temporary server (`SubprocessASGIServer._run_uvicorn_command`, a Popen)."""

WATCH_INTERVAL_S = 0.5
"""How often the server's watchdog checks that the run that started it is alive."""


def run_guarded() -> None:
    """Entry point of the guarded server: `python -c "...run_guarded()" <parent pid> <module> <args>`.
    Runs `<module>` (uvicorn) in this process with a watchdog that ends it when the parent is gone."""
    import runpy

    parent, module = int(sys.argv[1]), sys.argv[2]
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watchdog").start()
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _watch_parent(parent: int) -> None:
    # Reparented (the run died, even by kill -9): stop gracefully, then for sure.
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)


class _GuardedSubprocess:
    """Stands in for the `subprocess` module inside Prefect's server module: its Popen starts the server
    in its own session under the watchdog; everything else is the real module."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args, **kwargs):  # noqa: N802 - the name Prefect calls
        if list(args[1:3]) == ["-m", "uvicorn"]:
            guard = "from flows.prefect_env import run_guarded; run_guarded()"
            args = [args[0], "-c", guard, str(os.getpid()), "uvicorn", *args[3:]]
            kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(args, **kwargs)


class _ServerHook(importlib.abc.MetaPathFinder):
    """Swaps `subprocess` in Prefect's server module for `_GuardedSubprocess` right after it is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != SERVER_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_guard(module):
            exec_module(module)
            module.subprocess = _GuardedSubprocess()

        spec.loader.exec_module = exec_and_guard  # type: ignore[method-assign]
        return spec


if not any(isinstance(finder, _ServerHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _ServerHook())
