"""The bounded sample buffer: newest kept, drops counted, failed writes requeued first."""

from __future__ import annotations

from typing import Any

from services.collector.sampling.buffer import SampleBuffer


def item(n: int) -> dict[str, Any]:
    return {"n": n}


def numbers(items: list[dict[str, Any]]) -> list[int]:
    return [i["n"] for i in items]


def test_buffer_keeps_the_newest_and_counts_drops():
    buffer = SampleBuffer(3)
    buffer.extend([item(1), item(2)])
    buffer.extend([item(3), item(4), item(5)])
    assert len(buffer) == 3
    assert buffer.dropped == 2
    assert numbers(buffer.drain()) == [3, 4, 5]
    assert len(buffer) == 0
    assert buffer.dropped == 2  # draining is not dropping


def test_requeued_samples_go_back_ahead_of_newer_ones():
    buffer = SampleBuffer(10)
    buffer.extend([item(1), item(2)])
    failed = buffer.drain()
    buffer.extend([item(3)])  # taken while the write was failing
    buffer.requeue(failed)
    assert numbers(buffer.drain()) == [1, 2, 3]
    assert buffer.dropped == 0


def test_requeue_into_a_full_buffer_drops_the_oldest():
    buffer = SampleBuffer(3)
    buffer.extend([item(1), item(2)])
    failed = buffer.drain()
    buffer.extend([item(3), item(4)])
    buffer.requeue(failed)
    assert numbers(buffer.drain()) == [2, 3, 4]
    assert buffer.dropped == 1
