"""The dry run's estimate: the LLM calls, tokens and dollars the explain and score stages would spend.

The explainer and scorers come from the stages' own constructors, built without an LLM session (they
can then only plan their requests), so the estimate prices exactly the objects a real run would use.
"""

from __future__ import annotations

from explain.explainers.llm import LLMExplainer
from explain.llm.cost import CostEstimate, RequestPlanner, estimate_cost
from flows.config import RunConfig
from flows.stages.data import DataRef
from flows.stages.explain import make_explainer, pending_latents
from flows.stages.llm_session import llm_settings
from flows.stages.sampling import load_records
from flows.stages.score import make_scorers
from flows.store import Store
from score.base import Scorer


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
