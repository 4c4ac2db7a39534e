"""How unusual a deviation is under a metric's own past deviations: histogram percentiles and
a power-law tail fitted through them (the streaming detector's calibration).

Usage (compiled, from kernel.py): ``refresh(calib, quantiles, fade)`` every few samples;
``tail_surprise(quantiles[i, v], deviation, 0.5, 30)`` per sample and view (``-log10 p``;
docs/streaming-detection.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

from shared.arrays import FloatArray

F = TypeVar("F", bound=Callable[..., Any])

# histograms: bins of log2(deviation) from 2**-6 to 2**10, quarter-octave wide
LOG_LO, LOG_HI, LOG_STEP = -6.0, 10.0, 0.25
N_BINS = int((LOG_HI - LOG_LO) / LOG_STEP) + 1
DEV_MIN = 2.0**LOG_LO
DEV_CAP = 2.0**LOG_HI
SURPRISE_AT_MEDIAN = math.log10(2.0)


def compiled(f: F) -> F:
    """numba's nopython compilation, cached on disk beside the module."""
    return cast(F, numba.njit(cache=True, nogil=True)(f))


@compiled
def bin_of(dev: float) -> int:
    """The histogram bin of a deviation."""
    u = math.log2(max(dev, DEV_MIN))
    return min(int((u - LOG_LO) / LOG_STEP), N_BINS - 1)


@compiled
def tail_surprise(q: FloatArray, dev: float, min_tail_octaves: float, min_weight: float) -> float:
    """-log10 p of a deviation under a histogram's percentiles ``q`` (``refresh``).

    p is 0.5 at the median, 0.1 at the 90th percentile and 0.01 at the 99th (log-linear in
    between); beyond the 90th a power-law tail through the 90th and 99th: a tenth less for
    each further step of their ratio (at least 2 ** min_tail_octaves). The tail is fitted on
    the bulk, so anomalies that recur (under 1 % of the samples) stay rare. 0 where the
    histogram holds less than ``min_weight``.
    """
    if q[3] < min_weight:
        return 0.0
    u = math.log2(max(dev, DEV_MIN))
    u50, u90, u99 = float(q[0]), float(q[1]), float(q[2])
    if u > u90:
        return 1.0 + (u - u90) / max(u99 - u90, min_tail_octaves)
    below = SURPRISE_AT_MEDIAN + (1.0 - SURPRISE_AT_MEDIAN) * (u - u50) / max(u90 - u50, 1e-9)
    return min(max(below, 0.0), 1.0)


@compiled
def counted_surprise(
    q: FloatArray, h: FloatArray, dev: float, min_tail_octaves: float, min_weight: float
) -> float:
    """``tail_surprise``, but never more sure than the histogram ``h`` itself: where the
    weight of past deviations at least as large (this one's bin and above) is at least
    ``min_weight``, p is at least that weight's share. The power-law tail extrapolates past
    what was seen; a deviation seen that often before (a daily job's burst, 1 % of a day) is
    not new."""
    s = tail_surprise(q, dev, min_tail_octaves, min_weight)
    if s <= 2.0 or q[3] <= 0.0:  # up to the 99th percentile the tail is the counts
        return s
    w = 0.0
    for k in range(bin_of(dev), N_BINS):
        w += h[k]
    if w < min_weight:
        return s
    return min(s, -math.log10(min(w / float(q[3]), 1.0)))


@compiled
def _quantile(tails: FloatArray, share: float) -> float:
    """log2 of the deviation exceeded by ``share`` of the weight (interpolated in its bin);
    ``tails[b]`` is the weight at or above bin b."""
    want = share * float(tails[0])
    b = 0
    for k in range(N_BINS):
        if tails[k] >= want:
            b = k
    at = float(tails[b])
    nxt = float(tails[b + 1]) if b + 1 < N_BINS else 0.0
    frac = min(max((at - want) / max(at - nxt, 1e-12), 0.0), 1.0)
    return LOG_LO + (b + frac) * LOG_STEP


@compiled
def refresh(calib: FloatArray, quantiles: FloatArray, fade: float) -> None:
    """Fade every histogram ``calib[i, v]`` by ``fade``; recompute its percentiles into
    ``quantiles[i, v]``: log2 of the 50th, 90th, 99th percentile, and the weight."""
    tails = np.empty(N_BINS)
    for i in range(calib.shape[0]):
        for v in range(calib.shape[1]):
            h = calib[i, v]
            acc = 0.0
            for k in range(N_BINS - 1, -1, -1):
                h[k] *= fade
                acc += h[k]
                tails[k] = acc
            quantiles[i, v, 0] = _quantile(tails, 0.5)
            quantiles[i, v, 1] = _quantile(tails, 0.1)
            quantiles[i, v, 2] = _quantile(tails, 0.01)
            quantiles[i, v, 3] = tails[0]
