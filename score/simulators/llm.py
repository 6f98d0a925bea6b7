"""LLM simulator: predict every score-set token's activation (0-10) from the explanation alone.

Several score windows per request (`windows_per_call`, default 10): the prompt lists the windows, each
with its index and its [position, token] pairs, and the reply must be
{"windows": [{"window": w, "activations": [[position, level], ...]}, ...]}: every level keyed by its
token position. Windows are matched to reply entries by index (never by position in the reply) and
validated one by one (score.prompts.parse_windows): a window's positions must be exactly 0..len-1 once
each, so a dropped, repeated or shifted value is detected instead of moving the rest of the window onto
the wrong tokens. A window that comes back missing, misaligned or garbage is re-asked alone, as an
ordinary one-window call (validated strictly, so the client's parse_retries apply and a bad reply is
never cached); if that fails too, the latent's simulation fails (status failed with the error, no score
row). A reply with no usable "windows" list at all is re-requested by the client (parse_retries), then
fails the latent. With windows_per_call == 1 every window is such a strict one-window call.

The windows of one latent are shuffled (seed, latent) before batching, so a request mixes activating
and non-activating windows; results come back in the caller's order. `plan` renders exactly the
requests a clean run sends (the dry-run estimate relies on it).

Logprobs: when the server returns them (detected once per client), each level's token gives a
distribution over the levels 0..10: every top alternative that strips to a level adds to it (" 0" and
"0" are one level), renormalised over the levels present. A token's value is then the expected level
and its `p_active` is P(level > threshold) (P(level >= 1) at the default threshold 0.5). The k-th
"activations": [ of the reply text is aligned with the k-th keyed entry of the parsed reply, and its
[position, level] pairs are walked in the text: only the LEVEL's token counts (never the position's),
and only when it is exactly the number the parser read. A window whose pairs do not align, or where no
level token aligns, keeps its written levels (p_active None, mode "written"); inside an aligned window,
a level that did not align (e.g. "10" split into "1" "0" by the tokenizer) counts as certain: its
written level, p_active 1 or 0.

Binarisation (score/simulators/base.py::WindowSimulation.predicted_active): with logprobs a token is
predicted active when p_active > 0.5 (more likely active than not), not when the expected value is
> 0.5, which a small probability on a high level can exceed; without logprobs when the written level is
> threshold (0.5 on the 0-10 scale, i.e. at least 1). Both mirror the truth side (`true > 0`).

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
from score.simulators.base import SimulationFailure, SimulationItem, SimulationResult, WindowSimulation

log = logging.getLogger(__name__)
_ACTIVATIONS = re.compile(r'"activations"\s*:\s*\[')
_PAIR = re.compile(r"\s*\[\s*(-?\d+)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]\s*,?")
"""One [position, level] pair of the reply text (groups: position, level)."""
_LEVEL_TOKENS = {str(v): v for v in range(11)}
Messages = list[dict[str, str]]


class LLMSimulatorConfig(BaseModel):
    """LLM simulator options."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    threshold: float = 0.5
    """Predicted-active when the written level (0-10) is > threshold; with logprobs, when P(level > threshold)
    is > 0.5."""
    windows_per_call: int = Field(default=10, ge=1)
    """Score windows simulated per request (1 = one request per window)."""
    seed: int = 0
    """Seed of the per-latent window shuffle that mixes activating and quiet windows in a request."""
    use_logprobs: bool = True
    """Ask for logprobs (once; remembered per client) and use the level probabilities when given."""
    completion_tokens_per_token: int = Field(default=8, ge=1)
    """Completion-token allowance per simulated token, a [position, level] pair (reply cap = this * tokens +
    12 * windows + 20)."""


# ------------------------------------------------------------------ logprobs
def level_distribution(top: dict[str, float]) -> dict[int, float] | None:
    """P(level) for the levels 0..10 among one token's top alternatives ({token: logprob}).

    Alternatives that strip to the same level are one level, so their probabilities add (" 0" and "0");
    the result is renormalised over the levels present (the rest of the top-k mass is not a level).
    None when no alternative is a level.
    """
    probs: dict[int, float] = {}
    for token, logprob in top.items():
        level = _LEVEL_TOKENS.get(token.strip())
        if level is not None:
            probs[level] = probs.get(level, 0.0) + math.exp(logprob)
    total = sum(probs.values())
    return {level: p / total for level, p in probs.items()} if total > 0 else None


def level_summary(top: dict[str, float], threshold: float = 0.5) -> tuple[float, float] | None:
    """(expected level, P(level > threshold)) of one level token's top alternatives; None if none is a level."""
    dist = level_distribution(top)
    if dist is None:
        return None
    return sum(v * p for v, p in dist.items()), sum(p for v, p in dist.items() if v > threshold)


def _logprob_index(logprobs: list[dict]) -> dict[int, dict]:
    """Generated tokens by the text offset where their non-space part starts."""
    index: dict[int, dict] = {}
    offset = 0
    for item in logprobs:
        token = item["token"]
        index[offset + len(token) - len(token.lstrip())] = item
        offset += len(token)
    return index


def _text_pairs(text: str, start: int) -> list[tuple[int, str, int]]:
    """(position, level as written, offset of the level) of the [position, level] pairs right after `start`."""
    out, offset = [], start
    while (match := _PAIR.match(text, offset)) is not None:
        out.append((int(match.group(1)), match.group(2), match.start(2)))
        offset = match.end()
    return out


def _window_from_logprobs(text: str, index: dict[int, dict], start: int, order: list[int], levels: list[float],
                          threshold: float) -> WindowSimulation | None:
    """One parsed window with its level tokens' probabilities, or None when its pairs do not align."""
    pairs = _text_pairs(text, start)
    if [position for position, _, _ in pairs] != order:
        return None  # the text is not the list the parser read (repaired JSON, odd spacing): keep the written
    values = list(levels)
    p_active = [1.0 if v > threshold else 0.0 for v in levels]  # a level without logprobs counts as certain
    aligned = 0
    for position, written, offset in pairs:
        item = index.get(offset)
        if item is None or item["token"].strip() != written or _LEVEL_TOKENS.get(written) != levels[position]:
            continue  # e.g. "10" generated as "1" "0": this token's alternatives are not levels
        summary = level_summary(item["top"], threshold)
        if summary is not None:
            values[position], p_active[position] = summary
            aligned += 1
    if not aligned:
        return None
    return WindowSimulation(np.asarray(values), np.asarray(p_active), "logprobs")


def window_simulations(text: str, logprobs: list[dict] | None, parsed: WindowLevels,
                       threshold: float = 0.5) -> list[WindowSimulation | None]:
    """Per window of `parsed`: its WindowSimulation, from the logprobs where they align (see the module
    docstring), else from the written levels; None for a window that failed to parse."""
    starts = [m.end() for m in _ACTIVATIONS.finditer(text)]
    # One "activations": [ per keyed entry, or the k-th list in the text may not be the k-th entry parsed.
    index = _logprob_index(logprobs) if logprobs and len(starts) == parsed.n_keyed else None
    out: list[WindowSimulation | None] = []
    for levels, entry, order in zip(parsed.levels, parsed.entries, parsed.order, strict=True):
        if levels is None or order is None:
            out.append(None)
            continue
        window = None
        if index is not None and entry is not None:
            window = _window_from_logprobs(text, index, starts[entry], order, levels, threshold)
        out.append(WindowSimulation(np.asarray(levels), None, "written") if window is None else window)
    return out


# ------------------------------------------------------------------ the simulator
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
            # ~6 tokens per "[12, 0], " pair, plus each window's {"window": w, "activations": [...]} wrapper
            expected = 6 * sum(len(w) for w in windows) + 10 * len(windows) + 10
            plans.append((simulate_messages(explanation_text, windows), expected))
        return plans

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        """Per (explanation, examples) pair, in order: one WindowSimulation per example (values 0-10), or
        the failure; every pair's requests are in flight together."""
        assert self.client is not None, "this simulator was built without a client (planning only)"

        async def main() -> list[SimulationResult]:
            coros = [self._simulate(explanation, examples) for explanation, examples in items]
            return await gather_with_progress(coros, f"simulation ({self.name})", self.progress)

        return self.client.run_sync(main)

    async def _simulate(self, explanation: Explanation, examples: Sequence[Example]) -> SimulationResult:
        """One latent's windows; a budget stop or a call that gave up becomes its SimulationFailure."""
        assert self.client is not None
        batches = self.batches(explanation.latent, examples)
        coros = [self._simulate_windows(explanation.text, [examples[i].tokens for i in batch]) for batch in batches]
        try:
            results = await gather_with_progress(coros, "simulate", progress=False)
        except BudgetExhausted:
            return SimulationFailure("budget", "skipped")
        except LLMCallError as exc:
            return SimulationFailure(self.client.scrub(f"{exc.kind}: {exc}"))
        except Exception as exc:  # one latent's surprise must not sink the stage: a failure, one line
            message = self.client.scrub(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("latent %s: unexpected simulator error: %s", explanation.latent, message)
            return SimulationFailure(message)
        out = [WindowSimulation(np.zeros(0, dtype=np.float32)) for _ in examples]  # empty windows: nothing asked
        for batch, windows in zip(batches, results, strict=True):
            for i, window in zip(batch, windows, strict=True):
                out[i] = window
        return out

    async def _simulate_windows(self, explanation: str, windows: list[list[str]]) -> list[WindowSimulation]:
        """Predictions (values [len(w)] each, 0-10) for non-empty `windows`, in ONE request plus a
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
        results = window_simulations(reply.text, reply.logprobs, reply.value, self.threshold)
        bad = reply.value.failed
        if bad:
            log.info("simulation: %d of %d windows re-asked alone (%s)", len(bad), len(windows),
                     "; ".join(reply.value.errors[w] for w in bad)[:200])
            redone = await gather_with_progress([self._simulate_windows(explanation, [windows[w]]) for w in bad],
                                                "re-ask", progress=False)
            for w, again in zip(bad, redone, strict=True):
                results[w] = again[0]
        if reply.logprobs and any(r is not None and r.p_active is None for r in results):
            log.debug("simulation: logprobs did not align for some windows; their written levels are used")
        out = [r for r in results if r is not None]
        assert len(out) == len(windows), "every window that failed to parse was re-asked"
        return out
