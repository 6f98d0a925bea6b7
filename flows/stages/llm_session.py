"""The run's LLM session: one client, cache and budget per run; every call logged to `llm_calls`.

The response cache lives in the store (`<store>/cache/llm_responses`), so a rerun or a resumed run
re-reads answers instead of paying for them again; the budget (`--max-cost-usd`) is shared by the
explainer and every scorer of one run (flows/stages/explain.py::make_explainer and
flows/stages/score.py::make_scorers hand it to them). The stages flush the call log after each chunk of
latents, so an interruption loses at most one chunk of bookkeeping (not the cached responses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from explain.llm.client import CallRecorder, CostBudget, DirectoryResponseCache, LLMClient, LLMSettings
from flows.config import RunConfig
from flows.runners import parallel_share
from flows.store import Store

log = logging.getLogger(__name__)


@dataclass
class LLMSession:
    """The client, its call log and the run's spending budget."""

    client: LLMClient
    budget: CostBudget
    calls: CallRecorder
    run_id: str
    store: Store
    flushed: int = 0

    def flush_calls(self) -> None:
        """Append the calls made since the last flush to `llm_calls`."""
        rows = self.calls.rows[self.flushed:]
        if rows:
            frame = pl.DataFrame([{**r, "run_id": self.run_id} for r in rows], infer_schema_length=None)
            self.store.append("llm_calls", frame, part="calls")
        self.flushed += len(rows)


_SESSIONS: dict[str, LLMSession] = {}


def llm_settings(cfg: RunConfig) -> LLMSettings:
    """The run's LLM endpoint as client settings (the client's default model where the run names none,
    which only a run that needs no LLM does)."""
    unset = {"model"} if cfg.llm.model is None else set()
    return LLMSettings(**cfg.llm.model_dump(exclude=unset))


def session_for(cfg: RunConfig, run_id: str) -> LLMSession | None:
    """The run's LLM session, created on first use (one per run and process, so the budget spans all
    stages; a Dask worker's session gets its share of it, flows/runners.py); None when the run needs no LLM."""
    if not cfg.needs_llm():
        return None
    if run_id not in _SESSIONS:
        store = Store(cfg.store)
        calls = CallRecorder()
        client = LLMClient(llm_settings(cfg), cache=DirectoryResponseCache(store.cache_dir("llm_responses")),
                           on_call=calls)
        limit = None if cfg.max_cost_usd is None else cfg.max_cost_usd * parallel_share(cfg)
        _SESSIONS[run_id] = LLMSession(client, CostBudget(limit), calls, run_id, store)
    return _SESSIONS[run_id]


def close_session(run_id: str) -> None:
    """Flush the run's last calls and forget its session."""
    session = _SESSIONS.pop(run_id, None)
    if session is not None:
        session.flush_calls()
