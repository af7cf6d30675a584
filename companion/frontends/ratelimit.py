"""Token-bucket rate limits per key (a user, a group, a connection).

Each key has a bucket of `burst` turns that refills at `per_minute / 60` turns a second. Idle
buckets are forgotten, so memory stays bounded however many users come and go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0
    """Seconds until one more turn is allowed (0 when allowed)."""


class RateLimiter:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, last update)

    @property
    def unlimited(self) -> bool:
        return self.rate == float("inf")

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def check(self, key: Hashable, cost: float = 1.0) -> Decision:
        """Take `cost` turns from the key's bucket if it has them."""
        now = self.clock()
        tokens = self._tokens(key, now)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            self._prune(now)
            return Decision(True)
        self._buckets[key] = (tokens, now)
        wait = (cost - tokens) / self.rate if self.rate > 0 else float("inf")
        return Decision(False, retry_after=wait)

    def refund(self, key: Hashable, cost: float = 1.0) -> None:
        """Give back a turn that was taken but not used (e.g. another limit refused it)."""
        now = self.clock()
        self._buckets[key] = (min(self.burst, self._tokens(key, now) + cost), now)

    def _prune(self, now: float) -> None:
        if len(self._buckets) <= self.max_keys:
            return
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for key, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[key]
        while len(self._buckets) > self.max_keys:  # all recently active: drop the oldest
            del self._buckets[next(iter(self._buckets))]


def check_all(limits: list[tuple[RateLimiter, Hashable]]) -> Decision:
    """Take one turn from every (limiter, key) or from none of them."""
    taken: list[tuple[RateLimiter, Hashable]] = []
    for limiter, key in limits:
        decision = limiter.check(key)
        if not decision.allowed:
            for done, done_key in taken:
                done.refund(done_key)
            return decision
        taken.append((limiter, key))
    return Decision(True)
