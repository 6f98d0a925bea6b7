"""LLM simulator: predict every score-set token's activation (0-10) from the explanation alone.

Several score windows per request (`windows_per_call`, default 10): the prompt lists the windows, each
with its index and its [position, token] pairs, and the reply must be
{"windows": [{"window": w, "activations": [...]}, ...]} with one integer per token of each window.
Windows are matched to reply entries by index (never by position in the reply) and validated one by
one (score.prompts.parse_windows). A window that comes back missing, of the wrong length or garbage
is re-asked alone, as an ordinary one-window call (validated strictly, so the client's parse_retries
apply and a bad reply is never cached); if that fails too, the latent's simulation fails (status
failed with the error, no score row). A reply with no usable "windows" list at all is re-requested by
the client (parse_retries), then fails the latent. With windows_per_call == 1 every window is such a
strict one-window call (the v1 behaviour: one request per window).

The windows of one latent are shuffled (seed, latent) before batching, so a request mixes activating
and non-activating windows; results come back in the caller's order. `plan` renders exactly the
requests a clean run sends (the dry-run estimate relies on it).

Logprobs: when the server returns them (detected once per client), each prediction is the expected
value over the top alternatives "0".."10" of the token that wrote that number. The k-th
"activations": [...] list of the reply text is aligned with the k-th keyed entry of the parsed reply,
and a number's logprobs are used only when the generated token at that offset is exactly the number
the parser read; anything else (bare lists, prose around the JSON, odd tokenisation) falls back to
the written integers, for that number or that window.

Threshold: a token counts as predicted-active when its simulated activation is > 0.5 on the 0-10 scale,
i.e. the model predicts at least 1 (expected value at least ~0.5). That mirrors the truth side
(`true > 0`: any activation counts) while ignoring a small probability of firing in the logprob case.

`LLMSimulator` implements the Simulator protocol (score/simulators/base.py), so
`SimulationScorer(LLMSimulator(...))` scores it like N2G. `simulate_many` runs the requests of every
latent it is given concurrently through its client (bounded by the client's max_concurrency). A latent
whose calls give up is a `SimulationFailure` ("failed", with the error); once the budget (given to the
constructor, shared with the run's explainer and other scorers) runs out, the rest are "skipped",
error "budget".
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from explain.llm.client import BudgetExhausted, CostBudget, LLMCallError, LLMClient, gather_with_progress
from explain.records import Example, Explanation, LatentRecord
from score.prompts import SIMULATE_PROMPT_VERSION, SIMULATE_SCHEMA, WindowLevels, parse_windows, simulate_messages
from score.simulators.base import SimulationFailure, SimulationItem, SimulationResult

log = logging.getLogger(__name__)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ACTIVATIONS = re.compile(r'"activations"\s*:\s*\[')
_LEVEL_TOKENS = {str(v): v for v in range(11)}
Messages = list[dict[str, str]]


class LLMSimulatorConfig(BaseModel):
    """LLM simulator options."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    threshold: float = 0.5
    """Predicted-active when the simulated activation (0-10) is > threshold."""
    windows_per_call: int = Field(default=10, ge=1)
    """Score windows simulated per request (1 = one request per window)."""
    seed: int = 0
    """Seed of the per-latent window shuffle that mixes activating and quiet windows in a request."""
    use_logprobs: bool = True
    """Ask for logprobs (once; remembered per client) and use the expected value when given."""
    completion_tokens_per_token: int = Field(default=3, ge=1)
    """Completion-token allowance per simulated token (reply cap = this * tokens + 12 * windows + 20)."""


def _logprob_index(logprobs: list[dict]) -> dict[int, dict]:
    """Generated tokens by the text offset where their non-space part starts."""
    index: dict[int, dict] = {}
    offset = 0
    for item in logprobs:
        token = item["token"]
        index[offset + len(token) - len(token.lstrip())] = item
        offset += len(token)
    return index


def _expected_in_span(text: str, index: dict[int, dict], written: list[float], start: int, end: int) -> list[float]:
    spans = list(_NUMBER.finditer(text, start, end))
    if len(spans) != len(written):
        return list(written)
    out = []
    for match, value in zip(spans, written, strict=True):
        item = index.get(match.start())
        if item is None or item["token"].strip() != match.group() or min(10.0, max(0.0, float(match.group()))) != value:
            out.append(value)
            continue
        probs = {_LEVEL_TOKENS[t.strip()]: math.exp(lp) for t, lp in item["top"].items() if t.strip() in _LEVEL_TOKENS}
        total = sum(probs.values())
        out.append(sum(v * p for v, p in probs.items()) / total if total > 0 else value)
    return out


def expected_levels(text: str, logprobs: list[dict] | None, written: list[float]) -> list[float]:
    """Per-token expected activation of a reply holding ONE list (the numbers after its first "["),
    aligned with `written` (the parsed values); falls back to `written` where alignment is not clean."""
    start = text.find("[")
    if not logprobs or start < 0:
        return list(written)
    return _expected_in_span(text, _logprob_index(logprobs), written, start, len(text))


def window_expected_levels(text: str, logprobs: list[dict] | None, parsed: WindowLevels) -> list[list[float] | None]:
    """`parsed.levels` with logprob expected values where they align (see the module docstring)."""
    starts = [m.end() for m in _ACTIVATIONS.finditer(text)]
    if not logprobs or len(starts) != parsed.n_keyed:
        return list(parsed.levels)
    index = _logprob_index(logprobs)
    out: list[list[float] | None] = []
    for levels, entry in zip(parsed.levels, parsed.entries, strict=True):
        if levels is None or entry is None:
            out.append(levels)
            continue
        start = starts[entry]
        end = text.find("]", start)
        out.append(_expected_in_span(text, index, levels, start, end if end >= 0 else len(text)))
    return out


class LLMSimulator:
    """Simulator protocol over an `LLMClient` (batching, threshold, reply format: the module docstring)."""

    name = "llm"
    purpose = "simulation"
    """`purpose` of its llm_calls rows and its key in dry-run estimates."""
    prompt_version = SIMULATE_PROMPT_VERSION

    def __init__(self, client: LLMClient | None, config: LLMSimulatorConfig | None = None,
                 budget: CostBudget | None = None, progress: bool = False) -> None:
        self.client = client  # None: only plan() works (dry-run estimates)
        self.config = config or LLMSimulatorConfig()
        self.budget = budget
        self.progress = progress

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def identity(self) -> dict:
        model = self.client.settings.model if self.client is not None else None
        return {"simulator": self.name, "model": model, "prompt_version": self.prompt_version,
                **self.config.model_dump()}

    def batches(self, latent: int, examples: Sequence[Example]) -> list[list[int]]:
        """Indices into `examples` of each request's windows (empty windows need no request)."""
        order = [i for i, e in enumerate(examples) if e.tokens]
        random.Random(f"{self.config.seed}:simulation:{int(latent)}").shuffle(order)
        k = self.config.windows_per_call
        return [order[i : i + k] for i in range(0, len(order), k)]

    def plan(self, explanation_text: str, record: LatentRecord) -> list[tuple[Messages, int]]:
        """(messages, expected completion tokens) of each request for one latent (dry-run estimate)."""
        plans = []
        for batch in self.batches(record.latent, record.score):
            windows = [record.score[i].tokens for i in batch]
            expected = 2 * sum(len(w) for w in windows) + 10 * len(windows) + 10
            plans.append((simulate_messages(explanation_text, windows), expected))
        return plans

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        """Per (explanation, examples) pair, in order: one array per example ([window] each, 0-10), or
        the failure; every pair's requests are in flight together."""
        assert self.client is not None, "this simulator was built without a client (planning only)"

        async def main() -> list[SimulationResult]:
            coros = [self._simulate(explanation, examples) for explanation, examples in items]
            return await gather_with_progress(coros, f"simulation ({self.name})", self.progress)

        return self.client.run_sync(main)

    async def _simulate(self, explanation: Explanation, examples: Sequence[Example]) -> SimulationResult:
        """One latent's arrays; a budget stop or a call that gave up becomes its SimulationFailure."""
        assert self.client is not None
        batches = self.batches(explanation.latent, examples)
        coros = [self._simulate_windows(explanation.text, [examples[i].tokens for i in batch]) for batch in batches]
        try:
            results = await gather_with_progress(coros, "simulate", progress=False)
        except BudgetExhausted:
            return SimulationFailure("budget", "skipped")
        except LLMCallError as exc:
            return SimulationFailure(self.client.scrub(f"{exc.kind}: {exc}"))
        out = [np.zeros(0, dtype=np.float32) for _ in examples]
        for batch, arrays in zip(batches, results, strict=True):
            for i, array in zip(batch, arrays, strict=True):
                out[i] = array
        return out

    async def _simulate_windows(self, explanation: str, windows: list[list[str]]) -> list[np.ndarray]:
        """Predicted activations ([len(w)] each, 0-10) for non-empty `windows`, in ONE request plus a
        one-window re-ask per window that came back bad. Raises LLMCallError / BudgetExhausted."""
        assert self.client is not None
        lengths = [len(w) for w in windows]
        strict = len(windows) == 1
        reply = await self.client.complete_json(
            simulate_messages(explanation, windows),
            purpose=self.purpose,
            schema=SIMULATE_SCHEMA,
            validate=lambda value: parse_windows(value, lengths, strict=strict),
            want_logprobs=self.config.use_logprobs,
            max_tokens=self.config.completion_tokens_per_token * sum(lengths) + 12 * len(windows) + 20,
            budget=self.budget,
        )
        levels = window_expected_levels(reply.text, reply.logprobs, reply.value)
        bad = reply.value.failed
        if bad:
            log.info("simulation: %d of %d windows re-asked alone (%s)", len(bad), len(windows),
                     "; ".join(reply.value.errors[w] for w in bad)[:200])
            redone = await gather_with_progress([self._simulate_windows(explanation, [windows[w]]) for w in bad],
                                                "re-ask", progress=False)
            for w, arrays in zip(bad, redone, strict=True):
                levels[w] = arrays[0].tolist()
        return [np.asarray(v, dtype=np.float32) for v in levels]
