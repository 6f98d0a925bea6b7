"""Where the explain and score tasks run: in this process, on a local Dask cluster, or on a given one.

`--workers 1` (the default) runs tasks one at a time in this process, the cheapest on a laptop and the
order a reader expects in the logs. `--workers N` starts a `LocalCluster` of N single-threaded worker
processes (prefect-dask's DaskTaskRunner); `--dask-address tcp://host:port` sends the tasks to an
existing scheduler. Tasks take ids and store paths, never tensors (Dask pickles arguments), and every
worker reads and appends to the same store, so the store must be on a filesystem they all see.

Results do not depend on the placement: each task writes the rows of its own latents, and every
number is computed per latent from stored inputs (tests/flows/test_dask.py checks the tables match).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

from prefect import Task
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from tqdm import tqdm

from flows.config import RunConfig

if TYPE_CHECKING:
    from flows.artifacts import StageProgress


@contextmanager
def dask_scheduler(cfg: RunConfig) -> Iterator[str | None]:
    """The scheduler address the run's tasks go to: `--dask-address`, a LocalCluster of `--workers`
    processes started for the run (one start shared by explain and score), or None (in-process)."""
    if cfg.dask_address is not None or cfg.workers == 1:
        yield cfg.dask_address
        return
    from distributed import LocalCluster

    # one thread per worker: the tasks are numpy/torch bound and each already uses the cores it gets
    with LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def task_runner(address: str | None) -> TaskRunner:
    """Tasks on the Dask scheduler at `address`, or one at a time in this process (None)."""
    if address is None:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def parallel_share(cfg: RunConfig) -> float:
    """The fraction of the run's LLM budget one process may spend: each Dask worker has its own LLM
    session, so `--max-cost-usd` is split evenly over `--workers` and the total never exceeds it (with
    `--dask-address`, give the cluster's worker count as `--workers`)."""
    return 1.0 / cfg.workers if cfg.workers > 1 or cfg.dask_address is not None else 1.0


def fan_out(work: Task, calls: list[tuple[dict, int]], address: str | None, desc: str,
            artifact: StageProgress | None = None) -> list[int]:
    """Run `work(**parameters)` for every (parameters, latents) call on the task runner of `address`,
    with one progress bar over latents (and `artifact`, a Prefect progress artifact counting latents);
    returns each task's result, in call order. A task that still fails after its retries raises here
    (its latents keep no partial rows: each task appends at its end)."""
    total = sum(size for _, size in calls)
    with task_runner(address) as runner, artifact or nullcontext():
        futures = [runner.submit(work, parameters=parameters) for parameters, _ in calls]
        sizes = {id(future): size for future, (_, size) in zip(futures, calls, strict=True)}
        with tqdm(total=total, desc=desc, unit="latent") as bar:
            for future in as_completed(futures):
                future.result()  # raise the first failure now
                bar.update(sizes[id(future)])
                if artifact is not None:
                    artifact.advance(sizes[id(future)])
        return [int(future.result()) for future in futures]
