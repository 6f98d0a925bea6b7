"""Prefect tasks: the explain and score work over batches of latents, each a retried task run.

A task takes the run config, ids and store locations (never tensors or explanations: Prefect hashes
and Dask pickles arguments), does one chunk of latents and appends its rows. The store, not Prefect's
result cache, is the resume state, so a task first drops the latents that already have their rows:
a retried or rerun task never writes a row twice. Retries are for transient failures of a whole task
(a worker lost, a store on a flaky network filesystem); an LLM request's own retries are the client's
(tenacity, explain/llm/client.py), and one latent's failure is that latent's failed row, not a task
failure.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from flows.config import RunConfig
from flows.stages import explain as explain_stages
from flows.stages import score as score_stages
from flows.stages.data import DataRef
from flows.stages.llm_session import session_for

TASK_RETRIES = 2
RETRY_DELAYS_S = [10, 60]


def _chunk_name() -> str:
    """Task run name: what it does and to which latents ("score-latents n2g/simulation/natural 256-511")."""
    parameters = task_run.parameters
    latents = parameters.get("latents") or [0]
    job = parameters.get("job")
    what = f" {job.label}" if job is not None else ""
    return f"{task_run.task_name}{what} {latents[0]}-{latents[-1]}"


@task(name="explain-latents", task_run_name=_chunk_name, retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAYS_S,
      cache_policy=NO_CACHE)
def explain_latents(cfg: RunConfig, data: DataRef, sae_id: str, run_id: str, latents: list[int]) -> int:
    """Explain `latents` (those still pending) with the run's explainer; returns the rows written."""
    session = session_for(cfg, run_id)
    explainer = explain_stages.run_explainer(cfg, data, sae_id, session)
    return explain_stages.explain_chunk(cfg, data, sae_id, run_id, explainer, session, latents)


@task(name="score-latents", task_run_name=_chunk_name, retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAYS_S,
      cache_policy=NO_CACHE)
def score_latents(cfg: RunConfig, data: DataRef, sae_id: str, run_id: str, job: score_stages.ScoreJob,
                  latents: list[int]) -> int:
    """Score `latents` (those the job has not scored yet) for one (explainer, scorer) job; returns how many
    latents got a score row."""
    return score_stages.score_chunk(cfg, data, sae_id, run_id, job, session_for(cfg, run_id), latents)
