"""Throttles for LLM traffic: requests/tokens per minute, and a spending budget.

`TokenBucket` is an async token bucket (capacity = the per-minute limit, refilled continuously), used
once for requests (cost 1 each) and once for tokens (cost = estimated prompt + max completion tokens).
`CostBudget` reserves a call's worst-case cost before it is sent and settles the actual cost after, so
concurrent calls can never overshoot `max_usd` together.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time


class TokenBucket:
    """Async token bucket allowing `per_minute` units per minute (None = unlimited).

    Must be used from one event loop (the client keeps one bucket per loop).
    """

    def __init__(self, per_minute: float | None) -> None:
        self.per_minute = per_minute
        self._level = float(per_minute or 0)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until `amount` units are available, then take them (amount capped at the capacity)."""
        if not self.per_minute:
            return
        amount = min(float(amount), float(self.per_minute))
        rate = self.per_minute / 60.0
        async with self._lock:  # FIFO: one waiter refills at a time
            while True:
                now = time.monotonic()
                self._level = min(self.per_minute, self._level + (now - self._stamp) * rate)
                self._stamp = now
                if self._level >= amount:
                    self._level -= amount
                    return
                await asyncio.sleep((amount - self._level) / rate)


class BudgetExhausted(RuntimeError):
    """Raised instead of sending a request once the spending budget is used up."""


class CostBudget:
    """A USD budget shared by many concurrent calls (thread- and task-safe).

    `try_reserve(worst_case)` before sending; `settle(reserved, actual)` after (or `settle(r, 0)` if the
    call failed without usage). `spent_usd` counts settled costs only.
    """

    def __init__(self, max_usd: float | None) -> None:
        self.max_usd = math.inf if max_usd is None else float(max_usd)
        self.spent_usd = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()
        self._refused = False

    def try_reserve(self, worst_case_usd: float) -> bool:
        """Reserve `worst_case_usd`; False (and the budget is marked exhausted) if it would not fit."""
        with self._lock:
            if self._refused or self.spent_usd + self._reserved + worst_case_usd > self.max_usd:
                self._refused = True  # once refused, stay closed: no cheaper call sneaks in later
                return False
            self._reserved += worst_case_usd
            return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Release a reservation and record what the call really cost."""
        with self._lock:
            self._reserved = max(0.0, self._reserved - reserved_usd)
            self.spent_usd += actual_usd

    @property
    def exhausted(self) -> bool:
        """True once a reservation has been refused."""
        return self._refused


def approx_tokens(text: str) -> int:
    """Token count estimate used for TPM pacing and worst-case budget reservations: chars / 4.

    (The dry-run estimate in llm_cost uses tiktoken when installed; pacing only needs an upper-ish bound.)
    """
    return (len(text) + 3) // 4
