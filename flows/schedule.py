"""Scheduled runs of the pipeline: serve it from this process, or register it on a process work pool.

Both need a Prefect server started with `prefect server start` and named by `PREFECT_API_URL`: the
temporary server a plain run starts refuses schedules. Neither needs Docker or the network:

- `serve_pipeline` serves `pipeline.to_deployment(...)` (`prefect.serve`): this process registers the
  deployment and starts each scheduled (or triggered) run itself, until it is stopped;
  `pause_on_shutdown=False`, so stopping it (Ctrl-C, SIGTERM) leaves the schedule active.
- `deploy_pipeline` registers the deployment on a process work pool; a `prefect worker start --pool
  POOL` runs it. The code comes from this project directory (local storage: a `set_working_directory`
  pull step, and the module entrypoint `flows.pipeline.pipeline`), so the worker must run on this
  machine, in this environment.

The run config travels as the deployment's `cfg` parameter (a JSON dict, validated against RunConfig by
the server); its paths are made absolute first, because a served or deployed run does not start in the
directory `serve`/`deploy` was called from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.config import RunConfig

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.schedules import Schedule

log = logging.getLogger(__name__)

PIPELINE_FLOW = "latent-atlas-pipeline"
"""Name of the pipeline flow (flows/pipeline.py::pipeline); a deployment is `<flow>/<deployment>`."""
PIPELINE_ENTRYPOINT = "flows.pipeline.pipeline"
"""Module path of the pipeline flow: what a worker imports (the package is installed in the venv)."""
PROJECT_DIR = Path(__file__).resolve().parent.parent
"""The directory that holds the `flows` package: a deployment's working directory."""

SERVER_HINT = "run `prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
"""The fix for a missing or unreachable server, in every error that needs it."""


@dataclass(frozen=True)
class ScheduleSpec:
    """A validated cron schedule: the expression and its IANA timezone."""

    cron: str
    timezone: str = "UTC"

    def to_schedule(self) -> Schedule:
        from prefect.schedules import Cron

        return Cron(self.cron, timezone=self.timezone)


def parse_cron(cron: str, timezone: str = "UTC") -> ScheduleSpec:
    """Validate a cron expression and timezone the way the Prefect server will (one-line ValueError).

    Uses Prefect's own CronSchedule (croniter underneath), so what passes here is what the server accepts.
    Contacts nothing.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    cron = " ".join(cron.split())
    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ValueError(f"--cron {cron!r} is not a valid cron expression: use five fields, minute hour "
                         f"day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day)") from None
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError:
        raise ValueError(f"--timezone {timezone!r} is not an IANA timezone (e.g. UTC, Europe/Berlin)") from None
    return ScheduleSpec(cron, timezone)


def api_url() -> str:
    """The Prefect server the deployment goes to: PREFECT_API_URL from the environment or the Prefect
    profile; a one-line ValueError naming the fix when there is none. Contacts nothing."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ValueError(f"schedules need a running Prefect server (the temporary one refuses them): {SERVER_HINT}")
    return str(url)


def check_server(url: str) -> None:
    """One-line ValueError unless the server at `url` answers its health check."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ValueError(f"no Prefect server answers at {url} ({type(problem).__name__}): {SERVER_HINT}")


def check_process_pool(pool: str) -> None:
    """One-line ValueError unless `pool` exists and is a process pool (what `prefect worker start` runs)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            work_pool = client.read_work_pool(pool)
        except ObjectNotFound:
            raise ValueError(f"no work pool {pool!r}: create it with "
                             f"`prefect work-pool create {pool} --type process`") from None
    if work_pool.type != "process":
        raise ValueError(f"work pool {pool!r} is a {work_pool.type!r} pool; deploy needs a process pool "
                         f"(`prefect work-pool create NAME --type process`)")


def _absolute(value: str | None, always: bool = False) -> str | None:
    """A path that exists here (or the store, which a run creates) as an absolute path; anything else
    (a hub id, None) unchanged."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if always or path.exists() else value


def deployment_parameters(cfg: RunConfig) -> dict[str, Any]:
    """The pipeline's parameters for a deployment: `cfg` as a JSON dict, with its local paths absolute
    (the store always; the corpus, subject model and SAE where they exist here)."""
    data = cfg.data.model_copy(update={"corpus": _absolute(cfg.data.corpus), "model": _absolute(cfg.data.model)})
    fixed = cfg.model_copy(update={"store": _absolute(cfg.store, always=True), "sae_path": _absolute(cfg.sae_path),
                                   "data": data})
    return {"cfg": fixed.model_dump(mode="json")}


def check_schedulable(cfg: RunConfig) -> None:
    """What a run may do in a schedule: not a dry run (its output is a printed estimate)."""
    if cfg.dry_run:
        raise ValueError("--dry-run prints an estimate and stops: run it with `latent-atlas run --dry-run`, "
                         "not on a schedule")


def serve_pipeline(cfg: RunConfig, name: str, spec: ScheduleSpec) -> None:
    """Register deployment `latent-atlas-pipeline/<name>` with its cron schedule and run its flow runs from
    this process until it is stopped (Ctrl-C / SIGTERM; the schedule stays active).

    Each run is a `python -m prefect.engine` subprocess that imports `flows.pipeline.pipeline`, as a
    worker's would. (`pipeline.serve()` would instead cloudpickle the flow by value into a spawned process,
    where the string annotations of `from __future__ import annotations`, RunConfig and DataRef, no longer
    resolve and parameter validation fails.)
    """
    from prefect import serve
    from prefect.types.entrypoint import EntrypointType

    from flows.pipeline import pipeline

    deployment = pipeline.to_deployment(
        name=name, schedules=[spec.to_schedule()], parameters=deployment_parameters(cfg),
        entrypoint_type=EntrypointType.MODULE_PATH, description="latent-atlas pipeline, served by `latent-atlas serve`")
    log.info("serving %s/%s on cron %r (%s) against %s; trigger a run now with "
             "`prefect deployment run '%s/%s'`; Ctrl-C stops serving", PIPELINE_FLOW, name, spec.cron,
             spec.timezone, api_url(), PIPELINE_FLOW, name)
    serve(deployment, pause_on_shutdown=False, print_starting_message=False)
    log.info("stopped serving %s/%s (its schedule stays active)", PIPELINE_FLOW, name)


def deploy_pipeline(cfg: RunConfig, name: str, pool: str, spec: ScheduleSpec) -> UUID:
    """Register deployment `latent-atlas-pipeline/<name>` on process work pool `pool` with its cron
    schedule; returns its id. Runs nothing: `prefect worker start --pool POOL` does.

    No image and no upload: the code's storage is this project's directory (LocalStorage, which becomes a
    `set_working_directory` pull step) and the entrypoint the installed module `flows.pipeline.pipeline`.
    (`Flow.from_source` would do the same but also set `_storage` on the imported pipeline flow object.)
    """
    from prefect import deploy
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    deployment = RunnerDeployment.from_storage(
        storage=LocalStorage(str(PROJECT_DIR)), entrypoint=PIPELINE_ENTRYPOINT, name=name, flow_name=PIPELINE_FLOW,
        schedules=[spec.to_schedule()], parameters=deployment_parameters(cfg), work_pool_name=pool,
        description="latent-atlas pipeline, registered by `latent-atlas deploy`")
    (deployment_id,) = deploy(deployment, work_pool_name=pool, build=False, push=False,
                              print_next_steps_message=False, ignore_warnings=True)
    log.info("deployment %s/%s (%s) on work pool %r, cron %r (%s); start a worker with "
             "`prefect worker start --pool %s`, or run it now with `prefect deployment run '%s/%s'`",
             PIPELINE_FLOW, name, deployment_id, pool, spec.cron, spec.timezone, pool, PIPELINE_FLOW, name)
    return deployment_id
