"""Helpers for the LLM tests and benchmark: planted-latent records and client construction.

Planted latent i fires exactly on the word TRIGGERS[i] (activation 1-5), nowhere else, so the fake
server (tests/llm_server.py) explains it as 'the word "<trigger>"' and simulates it perfectly.
"""

from __future__ import annotations

import random

import numpy as np

from explain.llm_cache import ResponseCache
from explain.llm_client import CallRecorder, LLMClient, LLMSettings
from explain.records import Example, LatentRecord

FILLER = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
          "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
TRIGGERS = ("cat dog tree river stone cloud apple bread chair glass lamp paper piano shirt spoon "
            "tiger tulip violin wagon zebra").split()


def _context(rng: random.Random, length: int, trigger: str | None, n_hits: int) -> tuple[list[str], np.ndarray]:
    tokens = [rng.choice(FILLER) for _ in range(length)]
    acts = np.zeros(length, dtype=np.float32)
    if trigger is not None:
        for pos in rng.sample(range(length), n_hits):
            tokens[pos] = trigger
            acts[pos] = rng.uniform(1.0, 5.0)
    return tokens, acts


def planted_record(latent: int, seed: int = 0, n_explain: int = 8, n_score: int = 6, n_quiet: int = 4,
                   length: int = 16, injection: str | None = None) -> LatentRecord:
    """A record for planted latent `latent` with disjoint explain/score sets; `injection` (a string) is
    spliced as extra non-firing tokens into the first explain and score context."""
    rng = random.Random(f"{seed}:{latent}")
    trigger = TRIGGERS[latent % len(TRIGGERS)]
    ctx = latent * 1000

    def make(kind: str, n: int, fire: bool) -> list[Example]:
        nonlocal ctx
        out = []
        for _ in range(n):
            tokens, acts = _context(rng, length, trigger if fire else None, rng.randint(1, 3))
            ctx += 1
            out.append(Example(ctx, tokens, acts, kind, quantile=9 if fire else -1))  # type: ignore[arg-type]
        return out

    explain = make("activating", n_explain, True) + make("random", 2, False)
    score = make("activating", n_score, True) + make("random", n_quiet, False)
    if injection:
        explain[0], score[0] = _inject(explain[0], injection), _inject(score[0], injection)
    record = LatentRecord("sae-test", latent, explain, score, max_act=5.0, frequency=0.01)
    record.assert_disjoint()
    return record


def _inject(example: Example, text: str) -> Example:
    words = text.split()
    tokens = words + example.tokens
    acts = np.concatenate([np.zeros(len(words), dtype=np.float32), example.acts])
    return Example(example.ctx_id, tokens, acts, example.kind, example.quantile)


def planted_records(n: int, seed: int = 0, **kwargs: object) -> list[LatentRecord]:
    return [planted_record(i, seed, **kwargs) for i in range(n)]  # type: ignore[arg-type]


def make_client(base_url: str, cache: ResponseCache | None = None, **overrides: object
                ) -> tuple[LLMClient, CallRecorder]:
    """A client for the fake server with fast retries; returns it with its llm_calls recorder."""
    fields = {"model": "fake-model", "base_url": base_url, "max_concurrency": 8, "max_retries": 3,
              "retry_initial_wait_s": 0.01, "retry_max_wait_s": 0.5, "timeout_s": 5.0, **overrides}
    recorder = CallRecorder()
    settings = LLMSettings(**fields)  # type: ignore[arg-type]
    return LLMClient(settings, cache=cache, on_call=recorder), recorder
