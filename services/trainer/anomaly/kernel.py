"""The streaming detector's arithmetic for one sample of one host, compiled (numba).

``HostStream`` (streaming.py) keeps the state and builds the readings; this module does the
numbers: score one sample against every metric's four views and, when learning, update every
metric's state in place. One compiled call per sample instead of a hundred numpy calls on
arrays of 14 floats: about 10 us instead of 200 (bench/bench_stream_speed.py).

The calibration (tails.py) is a log2 histogram per metric and view; its 50th, 90th and 99th
percentiles are refreshed every ``refresh_every`` samples, in the same call. Every argument
is a float64 array or a float: state arrays are updated in place.
"""

from __future__ import annotations

import math

import numpy as np

from services.trainer.anomaly.tails import (
    DEV_CAP,
    bin_of,
    compiled,
    counted_surprise,
    refresh,
    tail_surprise,
)
from shared.arrays import FloatArray

DAY = 86400.0
MAX_SURPRISE = 30.0
N_VIEWS = 3  # level, short-term level, time of day (the range view needs no histogram)

# the config vector's slots (``config_vector``)
(
    C_LEVEL_TAU,
    C_SCALE_TAU,
    C_SHORT_TAU,
    C_CALIB_TAU,
    C_PROFILE_DAYS,
    C_PROFILE_BINS,
    C_RANGE_TAU,
    C_RANGE_TOL,
    C_NEVER_SEEN,
    C_CLIP,
    C_REFRESH_EVERY,
    C_MIN_TAIL,
    C_BAND,
    C_PROBATION_S,
    C_PROBATION_N,
    C_RANGE_WARMUP,
    C_COUNTS_CAP,
) = range(17)
CONFIG_FIELDS = (
    "level_tau",
    "scale_tau",
    "short_tau",
    "calibration_tau",
    "profile_days",
    "profile_bins",
    "range_tau",
    "range_tolerance",
    "never_seen",
    "clip",
    "refresh_every",
    "min_tail_octaves",
    "band",
    "probation_s",
    "probation_n",
    "range_warmup",
    "counts_cap",
)

# the per-metric output columns of ``step``
O_SURPRISE, O_EXPECTED, O_HALF, O_ACTIVE, O_LEARNING = range(5)
N_OUT = 5


@compiled
def step(
    x: FloatArray,
    ts: float,
    learn: bool,
    cfg: FloatArray,
    n: FloatArray,
    first_seen: FloatArray,
    last_seen: FloatArray,
    level: FloatArray,
    spread: FloatArray,
    short: FloatArray,
    low: FloatArray,
    high: FloatArray,
    season_spread: FloatArray,
    season_n: FloatArray,
    profile: FloatArray,
    calib: FloatArray,
    quantiles: FloatArray,
    counters: FloatArray,
    out: FloatArray,
) -> float:
    """Score one sample (``x``: NaN where missing) into ``out`` and return the host's
    surprise; when ``learn``, update the state in place. ``counters``: samples learned, time
    of the last refresh (NaN before the first)."""
    m = x.shape[0]
    n_bins = int(cfg[C_PROFILE_BINS])
    col_bin = int((ts % DAY) / DAY * n_bins)
    probation_n = cfg[C_PROBATION_N]
    counts_cap = cfg[C_COUNTS_CAP] > 0.0
    host = -1.0
    n_active = 0
    devs = np.zeros((m, N_VIEWS))
    season_ok = np.zeros(m, dtype=np.bool_)
    counted = np.zeros(m, dtype=np.bool_)
    for i in range(m):
        xi = x[i]
        seen = xi == xi
        known = n[i] > 0
        scored = seen and known
        floor = max(1e-6 * abs(level[i]), 1e-9)
        dt = max(ts - last_seen[i], 0.0) if known else 0.0
        dev = min(abs(xi - level[i]) / max(spread[i], floor), DEV_CAP) if scored else 0.0
        sh = (
            short[i] + (1.0 - math.exp(-dt / cfg[C_SHORT_TAU])) * (dev - short[i]) if known else 0.0
        )
        expected_now = profile[i, col_bin]
        ok = scored and expected_now == expected_now and ts - first_seen[i] > DAY
        sdev = 0.0
        if ok:
            sdev = min(abs(xi - expected_now) / max(season_spread[i], floor), DEV_CAP)
        devs[i, 0], devs[i, 1], devs[i, 2] = dev, sh, sdev
        season_ok[i] = ok

        surprise = 0.0
        if scored:
            lo = cfg[C_MIN_TAIL]
            if counts_cap:
                surprise = max(
                    counted_surprise(quantiles[i, 0], calib[i, 0], dev, lo, probation_n),
                    counted_surprise(quantiles[i, 1], calib[i, 1], sh, lo, probation_n),
                )
                if ok and season_n[i] > probation_n:
                    surprise = max(
                        surprise,
                        counted_surprise(quantiles[i, 2], calib[i, 2], sdev, lo, probation_n),
                    )
            else:
                surprise = max(
                    tail_surprise(quantiles[i, 0], dev, lo, probation_n),
                    tail_surprise(quantiles[i, 1], sh, lo, probation_n),
                )
                if ok and season_n[i] > probation_n:
                    surprise = max(surprise, tail_surprise(quantiles[i, 2], sdev, lo, probation_n))
            width = high[i] - low[i]
            margin = cfg[C_RANGE_TOL] * width
            seasoned = ts - first_seen[i] >= cfg[C_RANGE_WARMUP]
            if (
                seasoned
                and n[i] > 1
                and width > 0
                and (xi > high[i] + margin or xi < low[i] - margin)
            ):
                surprise = max(surprise, cfg[C_NEVER_SEEN] + min(dev, 100.0) / 10.0)
            surprise = min(surprise, MAX_SURPRISE)
        counted[i] = scored

        elapsed = ts - first_seen[i] if known else 0.0
        learning = n[i] + 1 <= probation_n or elapsed < cfg[C_PROBATION_S]
        active = seen and not learning
        if active:
            n_active += 1
            host = max(host, surprise)
        use_season = ok and season_spread[i] < spread[i]
        if seen and not known:
            expected = xi
        elif use_season:
            expected = expected_now
        else:
            expected = level[i]
        out[i, O_SURPRISE] = surprise if active else 0.0
        out[i, O_EXPECTED] = expected
        out[i, O_HALF] = cfg[C_BAND] * (season_spread[i] if use_season else spread[i])
        out[i, O_ACTIVE] = 1.0 if active else 0.0
        out[i, O_LEARNING] = 1.0 if learning else 0.0

    host_surprise = max(0.0, host - math.log10(n_active)) if n_active else 0.0
    if learn:
        _learn(x, ts, cfg, col_bin, devs, season_ok, counted, n, first_seen, last_seen, level,
               spread, short, low, high, season_spread, season_n, profile, calib, quantiles,
               counters)  # fmt: skip
    return host_surprise


@compiled
def _learn(
    x: FloatArray,
    ts: float,
    cfg: FloatArray,
    col_bin: int,
    devs: FloatArray,
    season_ok: np.ndarray,
    counted: np.ndarray,
    n: FloatArray,
    first_seen: FloatArray,
    last_seen: FloatArray,
    level: FloatArray,
    spread: FloatArray,
    short: FloatArray,
    low: FloatArray,
    high: FloatArray,
    season_spread: FloatArray,
    season_n: FloatArray,
    profile: FloatArray,
    calib: FloatArray,
    quantiles: FloatArray,
    counters: FloatArray,
) -> None:
    m = x.shape[0]
    # calibration: count this sample's deviations (faded in steps, at each refresh)
    for i in range(m):
        if counted[i]:
            calib[i, 0, bin_of(devs[i, 0])] += 1.0
            calib[i, 1, bin_of(devs[i, 1])] += 1.0
            if season_ok[i]:
                calib[i, 2, bin_of(devs[i, 2])] += 1.0
    counters[0] += 1.0
    if counters[0] % cfg[C_REFRESH_EVERY] == 0 or counters[0] <= cfg[C_PROBATION_N]:
        last = counters[1]
        fade = 1.0
        if last == last:
            fade = math.exp(-max(ts - last, 0.0) / cfg[C_CALIB_TAU])
        counters[1] = ts
        refresh(calib, quantiles, fade)

    n_bins = cfg[C_PROFILE_BINS]
    a_prof = min(1.0, 1.0 - math.exp(-n_bins / (DAY * cfg[C_PROFILE_DAYS])))
    clip = cfg[C_CLIP]
    for i in range(m):
        xi = x[i]
        if xi != xi:
            continue
        known = n[i] > 0
        dt = max(ts - last_seen[i], 0.0) if known else 0.0
        floor = max(1e-6 * abs(level[i]), 1e-9)
        scale = max(spread[i], floor)

        # time-of-day profile and its spread
        col = profile[i, col_bin]
        if col == col:
            a_season = max(1.0 - math.exp(-dt / cfg[C_SCALE_TAU]), 1.0 / (season_n[i] + 1.0))
            err = abs(xi - col)
            if season_n[i] > 0:
                err = min(err, clip * max(season_spread[i], floor))
            season_spread[i] += a_season * (err - season_spread[i])
            season_n[i] += 1.0
            profile[i, col_bin] = col + (1.0 - (1.0 - a_prof) ** dt) * (xi - col)
        else:
            profile[i, col_bin] = xi

        # level and spread (a sample moves them by at most `clip` spreads)
        if not known:
            level[i] = xi
            high[i] = xi
            low[i] = xi
            first_seen[i] = ts
        else:
            xc = xi
            if spread[i] > floor:
                xc = min(max(xi, level[i] - clip * scale), level[i] + clip * scale)
            d = xc - level[i]
            early = 1.0 / (n[i] + 1.0)  # early on, memories are as long as the history
            a_level = max(1.0 - math.exp(-dt / cfg[C_LEVEL_TAU]), early)
            a_spread = max(1.0 - math.exp(-dt / cfg[C_SCALE_TAU]), early)
            level[i] += a_level * d
            spread[i] += a_spread * (abs(d) - spread[i])
            # the range seen, fading towards the level
            a_range = 1.0 - math.exp(-dt / cfg[C_RANGE_TAU])
            high[i] = max(high[i] - a_range * (high[i] - level[i]), xi)
            low[i] = min(low[i] + a_range * (level[i] - low[i]), xi)
        short[i] = devs[i, 1]
        last_seen[i] = ts
        n[i] += 1.0
