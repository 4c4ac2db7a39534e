"""The features of one row from the samples of its last hour, compiled (numba).

One function computes a row; the batch path calls it for every row of a history and the
prediction path for the last row of a short window, so both give the same numbers. Layout
of a row: per metric ``PER_METRIC`` (9 values), then per condition (distance, eta), then
per breach line (minutes to reach it at the 15- and the 60-minute trend), then the time of
day (sin, cos). Windows are (t - w, t] in seconds; NaN samples are skipped.
"""

from __future__ import annotations

import math

import numpy as np

from services.trainer.anomaly.tails import compiled
from shared.arrays import FloatArray, IntArray

N_PER_METRIC = 9
LOOKBACK_S = 3600.0
ETA_CAP_MIN = 240.0
BREACH_CAP_MIN = 120.0  # "never" (not heading for the line, or further than this)
DAY = 86400.0


@compiled
def row_features(
    t: FloatArray,
    x: FloatArray,
    first: int,
    i: int,
    relative: IntArray,
    cond_metric: IntArray,
    cond_level: FloatArray,
    breach_metric: IntArray,
    breach_level: FloatArray,
    out: FloatArray,
) -> None:
    """Write row i's features (from rows first..i) into ``out``.

    A ``relative`` metric's level, 5- and 15-minute means and 15-minute max are written as
    differences from its 60-minute mean (its 60-minute mean itself as NaN). A breach line's
    minutes are those of the least-squares line of the window (its value now, its slope)
    to reach the level: 0 at or past it, ``BREACH_CAP_MIN`` if never or later than that.
    """
    m = x.shape[1]
    now = t[i]
    slope15 = np.empty(m)
    fitted = np.empty((m, 2))  # the 15- and 60-minute lines' value now
    slopes = np.empty((m, 2))
    for j in range(m):
        level = x[i, j]
        base = j * N_PER_METRIC
        out[base] = level
        # means over 5, 15, 60 minutes; the 15- and 60-minute slopes; std and max over 15
        for w_i in range(3):
            span = 300.0 if w_i == 0 else (900.0 if w_i == 1 else 3600.0)
            n = 0.0
            sx = 0.0
            st = 0.0
            for k in range(i, first - 1, -1):
                if t[k] <= now - span:
                    break
                v = x[k, j]
                if v == v:
                    n += 1.0
                    sx += v
                    st += (t[k] - now) / 60.0
            mean = sx / n if n > 0 else math.nan
            out[base + 1 + w_i] = mean
            if w_i == 0:
                continue
            tbar = st / n if n > 0 else 0.0
            sdd = 0.0
            sdx = 0.0
            sxx = 0.0
            top = -math.inf
            for k in range(i, first - 1, -1):
                if t[k] <= now - span:
                    break
                v = x[k, j]
                if v == v:
                    dt = (t[k] - now) / 60.0 - tbar
                    dx = v - mean
                    sdd += dt * dt
                    sdx += dt * dx
                    sxx += dx * dx
                    if v > top:
                        top = v
            slope = sdx / sdd if sdd > 0 else math.nan
            slopes[j, w_i - 1] = slope
            fitted[j, w_i - 1] = mean - slope * tbar
            if w_i == 1:
                slope15[j] = slope
                out[base + 4] = slope
                out[base + 6] = math.sqrt(sxx / n) if n > 0 else math.nan
                out[base + 7] = top if n > 0 else math.nan
            else:
                out[base + 5] = slope
        # minutes since a sample at or above the current level (the window's span if none)
        rising = math.nan
        if level == level:
            earliest = now
            found = False
            for k in range(i - 1, first - 1, -1):
                if t[k] <= now - LOOKBACK_S:
                    break
                v = x[k, j]
                if v == v:
                    earliest = t[k]
                    if v >= level:
                        rising = (now - t[k]) / 60.0
                        found = True
                        break
            if not found:
                rising = (now - earliest) / 60.0
        out[base + 8] = rising
        if relative[j]:
            hour = out[base + 3]
            out[base] -= hour
            out[base + 1] -= hour
            out[base + 2] -= hour
            out[base + 7] -= hour
            out[base + 3] = math.nan
    at = m * N_PER_METRIC
    for c in range(len(cond_metric)):
        j = cond_metric[c]
        gap = cond_level[c] - x[i, j]
        slope = slope15[j]
        if gap <= 0:
            eta = 0.0
        elif slope > 0:
            eta = gap / slope
        else:
            eta = ETA_CAP_MIN
        if eta > ETA_CAP_MIN:
            eta = ETA_CAP_MIN
        out[at + 2 * c] = gap
        out[at + 2 * c + 1] = eta
    at += 2 * len(cond_metric)
    for b in range(len(breach_metric)):
        j = breach_metric[b]
        for w in range(2):
            gap = breach_level[b] - fitted[j, w]
            slope = slopes[j, w]
            if gap != gap:
                eta = math.nan
            elif gap <= 0:
                eta = 0.0
            elif slope > 0 and gap / slope < BREACH_CAP_MIN:
                eta = gap / slope
            else:
                eta = BREACH_CAP_MIN
            out[at + 2 * b + w] = eta
    at += 2 * len(breach_metric)
    angle = 2.0 * math.pi * ((now % DAY) / DAY)
    out[at] = math.sin(angle)
    out[at + 1] = math.cos(angle)


@compiled
def all_rows(
    t: FloatArray,
    x: FloatArray,
    relative: IntArray,
    cond_metric: IntArray,
    cond_level: FloatArray,
    breach_metric: IntArray,
    breach_level: FloatArray,
    columns: IntArray,
    out: FloatArray,
) -> None:
    """Every row's features (the ``columns`` kept), each from the hour up to it (causal)."""
    rows = np.arange(len(t))
    some_rows(
        t, x, rows, relative, cond_metric, cond_level, breach_metric, breach_level, columns, out
    )


@compiled
def some_rows(
    t: FloatArray,
    x: FloatArray,
    rows: IntArray,
    relative: IntArray,
    cond_metric: IntArray,
    cond_level: FloatArray,
    breach_metric: IntArray,
    breach_level: FloatArray,
    columns: IntArray,
    out: FloatArray,
) -> None:
    """The features of ``rows`` (ascending) only, as ``all_rows`` computes them."""
    width = x.shape[1] * N_PER_METRIC + 2 * len(cond_metric) + 2 * len(breach_metric) + 2
    scratch = np.empty(width)
    first = 0
    for r in range(len(rows)):
        i = rows[r]
        while t[first] <= t[i] - LOOKBACK_S:
            first += 1
        row_features(
            t, x, first, i, relative, cond_metric, cond_level, breach_metric, breach_level, scratch
        )
        for c in range(len(columns)):
            out[r, c] = scratch[columns[c]]
