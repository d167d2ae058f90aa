"""Reconnection policy: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Reconnect:
    """How a subscription reconnects after a drop.

    The n-th consecutive failed attempt (from 0) waits a random time between 0 and
    ``min(max_interval, initial_interval * 2**n)`` ("full jitter"), or the hub's
    ``Retry-After`` when it sent one. After ``max_attempts`` consecutive failures (``None``:
    never give up) the subscription raises the last error. ``enabled=False`` raises at the
    first drop. Authentication failures and refusals are raised at once, never retried.
    """

    enabled: bool = True
    max_attempts: int | None = None
    initial_interval: float = 0.5
    max_interval: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_interval, self.initial_interval * (2 ** min(attempt, 32)))
        return (rng or random).uniform(0.0, ceiling)

    def gives_up(self, failures: int) -> bool:
        if not self.enabled:
            return failures >= 1
        return self.max_attempts is not None and failures >= self.max_attempts
