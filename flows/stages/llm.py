"""LLM explain/score stages: one client, cache and budget per run; every call logged to `llm_calls`.

The response cache lives in the store (`<store>/cache/llm_responses`), so a rerun or a resumed run
re-reads answers instead of paying for them again; the budget (`--max-cost-usd`) is shared by the
explainer and every scorer of one run. Work goes in chunks of latents; after each chunk its rows and
its call log are appended, so an interruption loses at most one chunk of bookkeeping (not the cached
responses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import polars as pl

from explain.records import Explanation, LatentRecord
from flows.config import RunConfig
from flows.stages.data import DataRef
from flows.stages.explain import CHUNK_LATENTS, pending_latents
from flows.stages.latents import load_records
from flows.store import Store
from flows.store.rows import explanation_frame, explanations_from_frame, latest_explanations, scored_latents

log = logging.getLogger(__name__)

LLM_CALLS_SCHEMA: dict[str, pl.DataType] = {
    "request_hash": pl.String(), "model": pl.String(), "purpose": pl.String(), "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(), "latency_s": pl.Float64(), "status": pl.String(), "error": pl.String(),
    "created_at": pl.Datetime("us", "UTC"), "run_id": pl.String(),
}


@dataclass
class LLMSession:
    """The client, its call log and the run's spending budget."""

    client: object
    budget: object
    calls: object
    run_id: str
    store: Store
    flushed: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def flush_calls(self) -> None:
        """Append the calls made since the last flush to `llm_calls`."""
        rows = self.calls.rows[self.flushed:]
        if rows:
            frame = pl.DataFrame([{**r, "run_id": self.run_id} for r in rows], schema=LLM_CALLS_SCHEMA,
                                 strict=False)
            self.store.append("llm_calls", frame, part="calls")
        self.flushed += len(rows)


_SESSIONS: dict[str, LLMSession] = {}


def llm_settings(cfg: RunConfig):
    from explain.llm.client import LLMSettings

    return LLMSettings(model=cfg.llm_model, base_url=cfg.llm_base_url, api_key_env=cfg.llm_api_key_env,
                       max_concurrency=cfg.llm_concurrency)


def session_for(cfg: RunConfig, run_id: str) -> LLMSession:
    """The run's LLM session (created on first use; one per run so the budget spans all stages)."""
    if run_id not in _SESSIONS:
        from explain.llm.client import CallRecorder, CostBudget, DirectoryResponseCache, LLMClient

        store = Store(cfg.store)
        calls = CallRecorder()
        client = LLMClient(llm_settings(cfg), cache=DirectoryResponseCache(store.cache_dir("llm_responses")),
                           on_call=calls)
        _SESSIONS[run_id] = LLMSession(client, CostBudget(cfg.max_cost_usd), calls, run_id, store)
    return _SESSIONS[run_id]


def close_session(run_id: str) -> None:
    session = _SESSIONS.pop(run_id, None)
    if session is not None:
        session.flush_calls()


def explain_with_llm(cfg: RunConfig, data: DataRef, sid: str, run_id: str) -> int:
    """LLM explanations for every selected latent without an ok one; failures are rows too."""
    from explain.explainers.llm import LLMExplainer

    session = session_for(cfg, run_id)
    explainer = LLMExplainer(session.client)
    todo = pending_latents(session.store, sid, explainer.name, cfg.max_latents)
    written = 0
    for start in range(0, len(todo), CHUNK_LATENTS):
        records = load_records(session.store, sid, data.dataset_id, todo[start: start + CHUNK_LATENTS])
        explanations = explainer.explain_many(records, budget=session.budget)
        session.store.append("explanations", explanation_frame(explanations, sid, run_id), part=sid)
        session.flush_calls()
        written += len(explanations)
    return written


def _scorer(name: str, client=None, budget=None):
    """The LLM scorer called `name`; with no client it can only `plan` its requests (dry run)."""
    if name == "simulation":
        from score.simulators.llm import LLMSimulator

        return LLMSimulator(client, budget=budget)
    if name == "detection":
        from score.judges.detection import DetectionScorer

        return DetectionScorer(client, budget=budget)
    from score.judges.fuzzing import FuzzingScorer

    return FuzzingScorer(client, budget=budget)


def _run_scorer(name: str, scorer, explanations: list[Explanation], records: dict[int, LatentRecord],
                sid: str, run_id: str):
    if name == "simulation":
        from score.simulators.llm import simulate_and_score_many

        return simulate_and_score_many(explanations, records, scorer, sae_id=sid, run_id=run_id)
    return scorer.score_many(explanations, records, sae_id=sid, run_id=run_id)


def score_with_llm(cfg: RunConfig, data: DataRef, sid: str, explainer: str, scorers: list[str],
                   run_id: str) -> dict[str, int]:
    """Score `explainer`'s ok explanations with LLM scorers; latents already scored are skipped."""
    from score.simulation import SCORE_SCHEMA, SIMULATION_SCHEMA

    session = session_for(cfg, run_id)
    ok = latest_explanations(session.store, sid, explainer).filter(pl.col("status") == "ok")
    counts: dict[str, int] = {}
    for name in scorers:
        todo = ok.filter(~pl.col("latent").is_in(sorted(scored_latents(session.store, sid, explainer, name))))
        scorer, counts[f"{explainer}/{name}"] = _scorer(name, session.client, session.budget), 0
        for start in range(0, todo.height, CHUNK_LATENTS):
            chunk = todo.slice(start, CHUNK_LATENTS)
            records = {r.latent: r for r in load_records(session.store, sid, data.dataset_id,
                                                         chunk["latent"].to_list())}
            outcomes = _run_scorer(name, scorer, explanations_from_frame(chunk), records, sid, run_id)
            ok_outcomes = [o for o in outcomes if o.status == "ok"]
            sims = [row for o in ok_outcomes for row in o.simulation_rows]
            if sims:
                session.store.append("simulations", pl.DataFrame(sims, schema=SIMULATION_SCHEMA), part=sid)
            if ok_outcomes:
                rows = [o.score_row for o in ok_outcomes]
                session.store.append("scores", pl.DataFrame(rows, schema=SCORE_SCHEMA, strict=False), part=sid)
            session.flush_calls()
            counts[f"{explainer}/{name}"] += len(ok_outcomes)
            _log_failures(name, explainer, [o for o in outcomes if o.status != "ok"])
    return counts


def _log_failures(scorer: str, explainer: str, outcomes: list) -> None:
    for outcome in outcomes[:5]:
        log.warning("%s/%s latent %d %s: %s", explainer, scorer, outcome.latent, outcome.status, outcome.error)
    if len(outcomes) > 5:
        log.warning("%s/%s: %d more latents not scored (rerun retries them)", explainer, scorer,
                    len(outcomes) - 5)


def estimate_llm_cost(cfg: RunConfig, data: DataRef, sid: str) -> str:
    """The dry-run report: calls, tokens and USD the LLM stages of this run would spend."""
    from explain.llm.cost import estimate_cost

    store = Store(cfg.store)
    todo = pending_latents(store, sid, cfg.explainer, cfg.max_latents)
    records = load_records(store, sid, data.dataset_id, todo)
    planners = [_scorer(name) for name in cfg.llm_scorers()]
    settings = llm_settings(cfg)
    estimate = estimate_cost(records, settings, explainer=cfg.explainer == "llm", scorers=planners)
    # Each explained latent's random baseline is scored the same way: the scorers' cost once more.
    baseline = estimate_cost(records, settings, explainer=False, scorers=planners)
    lines = [f"dry run: {len(records)} latents to explain with {cfg.explainer}, LLM {cfg.llm_model}; nothing "
             "was sent", f"{'purpose':<30}{'calls':>8}{'prompt tok':>12}{'compl. tok':>12}{'USD':>10}"]
    parts = [(p, r) for p, r in estimate.by_purpose.items()]
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
    return "\n".join(lines)

