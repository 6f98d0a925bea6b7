"""The run's LLM session (one client, cache and budget per run; every call logged to `llm_calls`) and the
dry-run estimate of what the LLM stages would spend.

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

from explain.explainers.llm import LLMExplainer
from explain.llm.client import CallRecorder, CostBudget, DirectoryResponseCache, LLMClient, LLMSettings
from explain.llm.cost import CostEstimate, RequestPlanner, estimate_cost
from flows.config import RunConfig
from flows.stages.data import DataRef
from flows.stages.explain import make_explainer, pending_latents
from flows.stages.sampling import load_records
from flows.stages.score import make_scorers
from flows.store import Store
from score.base import Scorer

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
    """The run's LLM session, created on first use (one per run, so the budget spans all stages);
    None when the run needs no LLM."""
    if not cfg.needs_llm():
        return None
    if run_id not in _SESSIONS:
        store = Store(cfg.store)
        calls = CallRecorder()
        client = LLMClient(llm_settings(cfg), cache=DirectoryResponseCache(store.cache_dir("llm_responses")),
                           on_call=calls)
        _SESSIONS[run_id] = LLMSession(client, CostBudget(cfg.max_cost_usd), calls, run_id, store)
    return _SESSIONS[run_id]


def close_session(run_id: str) -> None:
    """Flush the run's last calls and forget its session."""
    session = _SESSIONS.pop(run_id, None)
    if session is not None:
        session.flush_calls()


def _planners(scorers: list[Scorer]) -> list[RequestPlanner]:
    """The scorers that send LLM requests, as planners: judges plan their own requests, a simulation
    scorer its simulator's (the N2G simulator sends none)."""
    candidates = [getattr(scorer, "simulator", scorer) for scorer in scorers]
    return [c for c in candidates if isinstance(c, RequestPlanner)]


def estimate_llm_cost(cfg: RunConfig, data: DataRef, sid: str) -> str:
    """The dry-run report: calls, tokens and USD the LLM stages of this run would spend.

    The explainer and scorers come from the stages' own constructors, built without a session (they
    can then only plan), so the estimate prices exactly the objects a real run would use.
    """
    store = Store(cfg.store)
    explainer = make_explainer(cfg, None)
    planners = _planners(make_scorers(cfg, None))
    records = load_records(store, cfg, sid, data.dataset_id, pending_latents(store, cfg, sid, explainer))
    settings = llm_settings(cfg)
    llm_explainer = explainer if isinstance(explainer, LLMExplainer) else False
    estimate = estimate_cost(records, settings, explainer=llm_explainer, scorers=planners)
    # Each explained latent's random baseline is scored the same way: the scorers' cost once more.
    baseline = estimate_cost(records, settings, explainer=False, scorers=planners)
    header = (f"dry run: {len(records)} latents to explain with {explainer.name}, LLM {cfg.llm.model}; "
              "nothing was sent")
    return "\n".join([header, *_cost_lines(estimate, baseline)])


def _cost_lines(estimate: CostEstimate, baseline: CostEstimate) -> list[str]:
    lines = [f"{'purpose':<30}{'calls':>8}{'prompt tok':>12}{'compl. tok':>12}{'USD':>10}"]
    parts = list(estimate.by_purpose.items())
    parts += [(f"{p} (random baseline)", r) for p, r in baseline.by_purpose.items()]
    for purpose, row in parts:
        lines.append(f"{purpose:<30}{int(row['calls']):>8}{int(row['prompt_tokens']):>12}"
                     f"{int(row['completion_tokens']):>12}{row['cost_usd']:>10.4f}")
    total = [estimate.calls + baseline.calls, estimate.prompt_tokens + baseline.prompt_tokens,
             estimate.completion_tokens + baseline.completion_tokens, estimate.cost_usd + baseline.cost_usd]
    lines.append(f"{'total':<30}{total[0]:>8}{total[1]:>12}{total[2]:>12}{total[3]:>10.4f}")
    lines.append(f"upper bound (every reply at its token cap): "
                 f"{estimate.max_cost_usd + baseline.max_cost_usd:.4f} USD; tokens counted with "
                 f"{estimate.token_counter}")
    return lines
