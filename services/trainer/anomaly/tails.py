"""How unusual a deviation is under a metric's own past deviations: histogram percentiles and
a power-law tail fitted through them (the streaming detector's calibration).

Usage: ``q = percentiles(hist)`` every few samples; ``tail_surprise(q, deviations, 0.5, 30)``
per sample (``-log10 p``; docs/streaming-detection.md).
"""

from __future__ import annotations

import math

import numpy as np

from shared.arrays import FloatArray

# histograms: bins of log2(deviation) from 2**-6 to 2**10, quarter-octave wide
LOG_LO, LOG_HI, LOG_STEP = -6.0, 10.0, 0.25
N_BINS = int((LOG_HI - LOG_LO) / LOG_STEP) + 1
DEV_MIN = 2.0**LOG_LO
DEV_CAP = 2.0**LOG_HI
SURPRISE_AT_MEDIAN = math.log10(2.0)


def bins(dev: FloatArray) -> np.ndarray:
    """The histogram bin of each deviation."""
    u = np.log2(np.maximum(dev, DEV_MIN))
    out: np.ndarray = np.minimum(((u - LOG_LO) / LOG_STEP).astype(np.intp), N_BINS - 1)
    return out


def quantile(tails: FloatArray, total: FloatArray, share: float) -> FloatArray:
    """log2 of the deviation exceeded by ``share`` of the weight (interpolated in its bin);
    ``tails[..., b]`` is the weight at or above bin b."""
    want = share * total
    b = np.maximum((tails >= want[..., None]).sum(axis=-1) - 1, 0)
    at = np.take_along_axis(tails, b[..., None], axis=-1)[..., 0]
    shifted = np.concatenate((tails[..., 1:], np.zeros_like(tails[..., :1])), axis=-1)
    nxt = np.take_along_axis(shifted, b[..., None], axis=-1)[..., 0]
    frac = np.clip((at - want) / np.maximum(at - nxt, 1e-12), 0.0, 1.0)
    out: FloatArray = LOG_LO + (b + frac) * LOG_STEP
    return out


def percentiles(hist: FloatArray) -> FloatArray:
    """log2 of the 50th, 90th and 99th percentiles of each histogram, and its weight."""
    tails = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
    total = tails[..., 0]
    parts = [quantile(tails, total, share) for share in (0.5, 0.1, 0.01)]
    out: FloatArray = np.stack([*parts, total], axis=-1)
    return out


def tail_surprise(
    q: FloatArray, dev: FloatArray, min_tail_octaves: float, min_weight: float
) -> FloatArray:
    """-log10 p of each deviation under its histogram's percentiles ``q``.

    p is 0.5 at the median, 0.1 at the 90th percentile and 0.01 at the 99th (log-linear in
    between); beyond the 90th a power-law tail through the 90th and 99th: a tenth less for
    each further step of their ratio (at least 2 ** min_tail_octaves). The tail is fitted on
    the bulk, so anomalies that recur (under 1 % of the samples) stay rare. 0 where the
    histogram holds less than ``min_weight``.
    """
    u = np.log2(np.maximum(dev, DEV_MIN))
    u50, u90, u99, weight = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    above = 1.0 + (u - u90) / np.maximum(u99 - u90, min_tail_octaves)
    below = SURPRISE_AT_MEDIAN + (1.0 - SURPRISE_AT_MEDIAN) * (u - u50) / np.maximum(
        u90 - u50, 1e-9
    )
    surprise = np.where(u > u90, above, np.clip(below, 0.0, 1.0))
    out: FloatArray = np.where(weight >= min_weight, surprise, 0.0)
    return out
