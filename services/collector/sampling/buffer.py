"""The bounded buffer of samples waiting for the database.

Usage: `buffer.extend([sample])`, `samples = buffer.drain()`, `buffer.requeue(samples)` on failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any


class SampleBuffer:
    """Samples waiting for the database; bounded, oldest dropped first, drops counted."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[dict[str, Any]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, samples: Sequence[dict[str, Any]]) -> None:
        self._items.extend(samples)
        self._trim()

    def requeue(self, samples: Sequence[dict[str, Any]]) -> None:
        """Put back samples that failed to write, ahead of newer ones."""
        self._items.extendleft(reversed(samples))
        self._trim()

    def _trim(self) -> None:
        while len(self._items) > self.capacity:
            self._items.popleft()
            self.dropped += 1

    def drain(self) -> list[dict[str, Any]]:
        items = list(self._items)
        self._items.clear()
        return items
