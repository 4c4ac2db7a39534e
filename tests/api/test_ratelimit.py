"""The token buckets of the gateway's rate limits, on a clock the test moves."""

from __future__ import annotations

import pytest

from services.api.access.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_rate_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=clock)
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.wait("a") == 0.0
    assert limiter.wait("b") == 0.0  # each caller has its own bucket
    clock.now += 60
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # never above the burst
    assert limiter.wait("a") > 0


def test_the_least_recently_seen_caller_is_dropped_past_the_bound() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1.0, max_callers=2, clock=clock)
    assert limiter.wait("a") == 0.0
    assert limiter.wait("b") == 0.0
    assert limiter.wait("a") > 0  # a is now the most recent
    assert limiter.wait("c") == 0.0  # drops b, the least recently seen
    assert limiter.wait("a") > 0  # a kept its empty bucket
    assert limiter.wait("b") == 0.0  # b starts again, full


def test_a_zero_rate_is_no_limit() -> None:
    limiter = RateLimiter(rate=0.0, burst=1.0)
    assert not limiter.enabled
    assert all(limiter.wait("a") == 0.0 for _ in range(1000))
