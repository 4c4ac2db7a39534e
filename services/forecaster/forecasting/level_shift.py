"""A recent, lasting change of level: found on the deseasonalised history, removed by re-levelling the past.

Usage: `shift = find_level_shift(y, day=96, ...)`; when one is found, `relevel(y, shift)` moves every
step before it by ``shift.delta``, so that every forecaster sees the seasonal shape at the new level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from services.forecaster.forecasting.candidates import seasonal_profile
from shared.arrays import FloatArray

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class LevelShift:
    """A change of level at grid index ``at`` (the first step at the new level), by ``delta``."""

    at: int
    delta: float
    score: float  # |delta| over the noise of the deseasonalised history before it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_level_shift(
    y: FloatArray,
    *,
    day: int,
    search_steps: int,
    min_after: int,
    threshold: float,
    profile_days: int = 7,
) -> LevelShift | None:
    """The strongest change of level that starts in the last ``search_steps`` and lasts to the end.

    The history is deseasonalised by its daily profile (medians, so a shift in the last
    days hardly moves it). A change is kept when the median after it differs from the
    median of the day before it by more than ``threshold`` robust sigmas (MAD of that
    day), at least ``min_after`` steps follow it, and the final ``min_after`` steps are
    on the same side, at least half as far: a burst that ended is not a new level.
    """
    n = len(y)
    if n < 3 * day or min_after < 1:
        return None
    shape = seasonal_profile(y[: n - min_after], day, profile_days)
    if shape is None:
        return None
    base = n - min_after - day  # slot of index i: (i - base) mod day
    r = y - shape[(np.arange(n) - base) % day]
    best: LevelShift | None = None
    first = max(2 * day, n - search_steps)
    for at in range(first, n - min_after + 1, max(1, min_after // 4)):
        before = r[at - day : at]
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(before - np.median(before))))
        if sigma <= 0:
            sigma = float(np.std(before)) or 1e-12
        level = float(np.median(before))
        delta = float(np.median(r[at:])) - level
        tail = float(np.median(r[n - min_after :])) - level
        head = float(np.median(r[at : at + min_after])) - level
        drift = level - float(np.median(r[at - 2 * day : at - day]))
        score = abs(delta) / sigma
        if score < threshold or tail * delta <= 0 or abs(tail) < abs(delta) / 2:
            continue
        # A step, not a slope: flat before it, and as high at its start as at the end.
        if abs(head - tail) > abs(delta) / 2 or abs(drift) > abs(delta) / 2:
            continue
        if best is None or score > best.score:
            best = LevelShift(at=at, delta=delta, score=score)
    return best


def relevel(y: FloatArray, shift: LevelShift | None) -> FloatArray:
    """``y`` with every step before the shift moved to the new level."""
    if shift is None:
        return y
    out = np.array(y, dtype=float)
    out[: shift.at] += shift.delta
    return out
