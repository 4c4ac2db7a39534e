"""Token buckets per caller, in memory: `limiter.wait(identity)` is 0 when a request may pass.

Use: `limiter = RateLimiter(rate=100, burst=200)`; `if (wait := limiter.wait("key:3")) > 0:`
answer 429 with `Retry-After: ceil(wait)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` per second; each request takes one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per identity; at most `max_callers` buckets, the least recently used dropped
    (a dropped caller starts again with a full bucket)."""

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_callers = max_callers
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait(self, identity: str) -> float:
        """0 if `identity` may make a request now (and counts it), else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.pop(identity, None)
        if bucket is None:
            bucket = TokenBucket(rate=self.rate, burst=self.burst, now=now)
            if len(self._buckets) >= self.max_callers:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[identity] = bucket  # most recently used last
        return bucket.take(now)
