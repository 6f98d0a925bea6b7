"""LLM simulator: predict every score-set token's activation (0-10) from the explanation alone.

One request per score example, all tokens at once: the prompt lists [index, token] pairs and the reply
must be {"activations": [...]} with exactly one integer per token (validated; a wrong length or garbage
is re-requested once, then the latent's simulation fails and it gets no score row). When the server
returns logprobs (detected once per client), each prediction is the expected value over the top
alternatives "0".."10" of the token that wrote that number; otherwise the written integer is used.

Threshold: a token counts as predicted-active when its simulated activation is > 0.5 on the 0-10 scale,
i.e. the model predicts at least 1 (expected value at least ~0.5). That mirrors the truth side
(`true > 0`: any activation counts) while ignoring a small probability of firing in the logprob case.

`LLMSimulator` implements score.simulation.Simulator, so `score_latent` scores it like N2G; use
`simulate_and_score_many` to run many latents concurrently.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from explain.llm_client import BudgetExhausted, CostBudget, LLMCallError, LLMClient, gather_with_progress
from explain.prompts import SIMULATE_SCHEMA, parse_levels, simulate_messages
from explain.records import Example, Explanation, LatentRecord
from score.simulation import ScoredLatent, score_latent

log = logging.getLogger(__name__)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LEVEL_TOKENS = {str(v): v for v in range(11)}


class LLMSimulatorConfig(BaseModel):
    """LLM simulator options."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    threshold: float = 0.5
    """Predicted-active when the simulated activation (0-10) is > threshold."""
    use_logprobs: bool = True
    """Ask for logprobs (once; remembered per client) and use the expected value when given."""
    completion_tokens_per_token: int = Field(default=3, ge=1)
    """Completion-token allowance per simulated token (reply length cap = this * tokens + 20)."""


class LLMSimulationError(RuntimeError):
    """The simulation of one latent failed (one of its examples could not be simulated)."""


@dataclass
class LLMScoreOutcome:
    """One latent's result under one LLM scorer: rows when ok, a reason otherwise."""

    latent: int
    explainer: str
    scorer: str
    status: str
    """"ok", "failed" (the scorer's calls failed) or "skipped" (explanation not ok, no examples, budget)."""
    error: str = ""
    score_row: dict | None = None
    simulation_rows: list[dict] = field(default_factory=list)


def expected_levels(text: str, logprobs: list[dict] | None, written: list[float]) -> list[float]:
    """Per-token expected activation from logprobs, aligned with `written` (the parsed integers).

    Finds each number of the reply's activation list, the generated token that wrote it, and takes
    sum(p * v) / sum(p) over that token's top alternatives "0".."10". Falls back to `written` (for one
    number, or all of them) when the alignment is not clean.
    """
    if not logprobs:
        return list(written)
    start = text.find("[")
    spans = [m for m in _NUMBER.finditer(text, start)] if start >= 0 else []
    if len(spans) != len(written):
        return list(written)
    token_at: dict[int, dict] = {}
    offset = 0
    for item in logprobs:
        token = item["token"]
        token_at[offset + len(token) - len(token.lstrip())] = item
        offset += len(token)
    out = []
    for match, value in zip(spans, written, strict=True):
        item = token_at.get(match.start())
        if item is None or item["token"].strip() != match.group():
            out.append(value)
            continue
        probs = {_LEVEL_TOKENS[t.strip()]: math.exp(lp) for t, lp in item["top"].items() if t.strip() in _LEVEL_TOKENS}
        total = sum(probs.values())
        out.append(sum(v * p for v, p in probs.items()) / total if total > 0 else value)
    return out


class LLMSimulator:
    """Simulator protocol over an `LLMClient` (threshold and reply format: see the module docstring)."""

    name = "llm"
    purpose = "simulation"
    """`purpose` of its llm_calls rows and its key in dry-run estimates."""

    def __init__(
        self, client: LLMClient | None, config: LLMSimulatorConfig | None = None, budget: CostBudget | None = None
    ) -> None:
        self.client = client  # None: only plan() works (dry-run estimates)
        self.config = config or LLMSimulatorConfig()
        self.budget = budget

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def plan(self, explanation_text: str, record: LatentRecord) -> list[tuple[list[dict[str, str]], int]]:
        """(messages, expected completion tokens) of each request for one latent (dry-run estimate)."""
        return [
            (simulate_messages(explanation_text, e.tokens), 2 * len(e.tokens) + 10) for e in record.score if e.tokens
        ]

    async def simulate_tokens(self, explanation: str, tokens: list[str]) -> np.ndarray:
        """Predicted activations ([len(tokens)], 0-10) for one window. Raises LLMCallError/BudgetExhausted."""
        if not tokens:
            return np.zeros(0, dtype=np.float32)
        assert self.client is not None, "this simulator was built without a client (planning only)"
        n = len(tokens)
        reply = await self.client.complete_json(
            simulate_messages(explanation, tokens),
            purpose=self.purpose,
            schema=SIMULATE_SCHEMA,
            validate=lambda value: parse_levels(value, n),
            want_logprobs=self.config.use_logprobs,
            max_tokens=self.config.completion_tokens_per_token * n + 20,
            budget=self.budget,
        )
        levels = expected_levels(reply.text, reply.logprobs, reply.value)
        return np.asarray(levels, dtype=np.float32)

    async def asimulate(self, explanation: Explanation, examples: list[Example]) -> list[np.ndarray]:
        """One array per example ([window] each); raises LLMSimulationError if any example fails."""
        if not explanation.ok:
            raise LLMSimulationError(f"latent {explanation.latent}: explanation is {explanation.status}")
        coros = [self._one(explanation.text, e.tokens) for e in examples]
        results = await gather_with_progress(coros, "simulate", progress=False)
        return results

    async def _one(self, text: str, tokens: list[str]) -> np.ndarray:
        try:
            return await self.simulate_tokens(text, tokens)
        except LLMCallError as exc:
            raise LLMSimulationError(f"{exc.kind}: {exc}") from None

    def simulate(self, explanation: Explanation, examples: list[Example]) -> list[np.ndarray]:
        """Sync form of `asimulate` (the Simulator protocol)."""
        return self.client.run_sync(lambda: self.asimulate(explanation, examples))


class _Precomputed:
    """Hands `score_latent` arrays that were simulated concurrently beforehand."""

    def __init__(self, name: str, threshold: float, sims: list[np.ndarray]) -> None:
        self.name, self.threshold, self._sims = name, threshold, sims

    def simulate(self, explanation: Explanation, examples: list[Example]) -> list[np.ndarray]:
        return self._sims


async def _simulate_and_score(
    simulator: LLMSimulator,
    explanation: Explanation,
    record: LatentRecord | None,
    scorer: str,
    sae_id: str | None,
    run_id: str,
) -> LLMScoreOutcome:
    outcome = LLMScoreOutcome(int(explanation.latent), explanation.explainer, scorer, "skipped")
    if record is None or not record.score or not explanation.ok:
        outcome.error = "no score examples" if explanation.ok else f"explanation {explanation.status}"
        return outcome
    try:
        sims = await simulator.asimulate(explanation, record.score)
    except BudgetExhausted:
        outcome.error = "budget"
        return outcome
    except LLMSimulationError as exc:
        outcome.status, outcome.error = "failed", simulator.client.scrub(str(exc))
        return outcome
    scored: ScoredLatent = score_latent(
        explanation, record, _Precomputed(simulator.name, simulator.threshold, sims), scorer, sae_id, run_id
    )
    outcome.status, outcome.score_row, outcome.simulation_rows = "ok", scored.score_row, scored.simulation_rows
    return outcome


def simulate_and_score_many(
    explanations: Sequence[Explanation],
    records: Mapping[int, LatentRecord],
    simulator: LLMSimulator,
    scorer: str = "simulation",
    sae_id: str | None = None,
    run_id: str = "",
    progress: bool = True,
) -> list[LLMScoreOutcome]:
    """Simulate and score every explanation concurrently; one outcome per explanation, in order.

    Rows of ok outcomes go to the `simulations` and `scores` tables (same columns as the N2G path).
    """

    async def main() -> list[LLMScoreOutcome]:
        coros = [_simulate_and_score(simulator, e, records.get(e.latent), scorer, sae_id, run_id) for e in explanations]
        return await gather_with_progress(coros, f"{scorer} (llm)", progress)

    outcomes = simulator.client.run_sync(main)
    log.info(
        "llm %s: %d ok, %d failed, %d skipped",
        scorer,
        sum(o.status == "ok" for o in outcomes),
        sum(o.status == "failed" for o in outcomes),
        sum(o.status == "skipped" for o in outcomes),
    )
    return outcomes
