"""NAB adapter: the per-metric layer (exactly as ``nab_adapter``) plus a fifth, window-novelty view.

``NAB_WINDOW="span=7200 m=8 k=3 R=128 stride=4 combine=max" PYTHONPATH=.:bench
.venv/bin/python ../shared/benchmarks/anomaly/nab_eval.py nab_window_view:detect --name autofixwin
--nab-python /tmp/nabvenv/bin/python``

Bench code only: the service is untouched. The window view, computed causally here:

- *grid in time*: the series is binned on an absolute grid of step ``g = span / m`` seconds
  (bin mean; an empty bin carries the last value forward). With ``floor=1`` (default) the step
  is at least the metric's typical sampling interval (median of its first 30 intervals, fixed
  then), so an hourly series gets windows of m hours rather than m copies of one value.
- *shape*: the current window is the last ``m`` bins (the newest one partial, as it stands at
  this sample), minus its own mean, divided by the layer's spread of the metric (its mean
  absolute deviation, one day's memory); the layer already watches the level.
- *reservoir*: a ring of the last ``R`` completed windows, one kept every ``stride`` bins,
  stored as int8 at 1/16 spread (clipped to +-7.9: 1 byte a value, R * m bytes a metric).
  Windows that overlap the current one are not compared.
- *novelty*: the mean of the ``k`` smallest RMS distances (in spreads) from the current window
  to the reservoir's windows.
- *calibration*: the project's own (``tails``): a faded log2 histogram of the novelty of past
  samples, its 50/90/99th percentiles, power-law tail, capped by the counts -> a surprise
  (-log10 p), the same scale as the layer's views.
- *combined*: ``max`` (a fifth view, as the layer combines its four), or ``fisher`` (Fisher's
  method on the layer's p and the view's p, chi-square with 4 degrees of freedom).

The layer's output per file is cached in /tmp/nabwin_cache (the variants share it). The time
spent in the window view per sample is appended to $NAB_WINDOW_STATS when set.
"""

from __future__ import annotations

import hashlib
import math
import os
import time

import numpy as np
import pandas as pd

from services.trainer.anomaly.streaming import HostStream
from services.trainer.anomaly.tails import N_BINS, bin_of, counted_surprise, refresh

_OVERRIDES = os.environ.get("NAB_STREAM_CONFIG", "").split()
_DEFAULTS = {
    "span": 7200.0,  # seconds covered by a window (at least m sampling intervals with floor=1)
    "m": 8,  # values a window
    "k": 3,  # nearest neighbours averaged
    "R": 128,  # windows kept
    "stride": 4,  # a window kept every this many bins
    "combine": "max",
    "norm": "demean",  # demean: shape only (minus its mean); abs: the values themselves
    "floor": 1,
    "calib_tau": 7 * 86400.0,
    "refresh_every": 16,
    "probation_n": 30,
    "min_tail": 0.5,
    # novelty below this (spreads) is not measured: 1/16 is the stored windows' resolution
    "dfloor": 0.0,
}
CACHE = "/tmp/nabwin_cache"


def settings() -> dict[str, object]:
    s = dict(_DEFAULTS)
    for pair in os.environ.get("NAB_WINDOW", "").split():
        key, value = pair.split("=", 1)
        if key not in s:
            raise SystemExit(f"unknown NAB_WINDOW key {key!r}")
        s[key] = type(s[key])(value) if not isinstance(s[key], int) else int(float(value))
    return s


def layer(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-metric layer as nab_adapter runs it: times, surprise, accepted, spread."""
    from bench.bench_stream_smd import config_from

    stamps = pd.to_datetime(df["timestamp"]).astype("datetime64[ns]").astype("int64")
    times = stamps.to_numpy() / 1e9
    values = df["value"].astype(float).to_numpy()
    key = hashlib.sha1(times.tobytes() + values.tobytes() + " ".join(_OVERRIDES).encode())
    path = os.path.join(CACHE, key.hexdigest() + ".npz")
    if os.path.exists(path):
        z = np.load(path)
        return times, z["surprise"], z["accepted"], z["spread"]
    stream = HostStream(("value",), config_from(_OVERRIDES))
    surprise = np.zeros(len(df))
    accepted = np.zeros(len(df), dtype=bool)
    spread = np.zeros(len(df))
    for i in range(len(df)):
        r = stream.update(float(times[i]), {"value": float(values[i])})
        surprise[i], accepted[i] = r.surprise, r.accepted
        spread[i] = max(stream.spread[0], 1e-6 * abs(stream.level[0]), 1e-9)
    os.makedirs(CACHE, exist_ok=True)
    tmp = path + f".{os.getpid()}.tmp.npz"
    np.savez(tmp, surprise=surprise, accepted=accepted, spread=spread)
    os.replace(tmp, path)
    return times, surprise, accepted, spread


class WindowView:
    """The window-novelty view of one metric (state: ring of int8 windows + a histogram)."""

    def __init__(self, s: dict[str, object]) -> None:
        self.s = s
        self.m, self.k, self.R = int(s["m"]), int(s["k"]), int(s["R"])
        self.g = math.nan  # grid step, fixed once the sampling interval is known
        self.intervals: list[float] = []
        self.last_ts = math.nan
        self.bins: list[float] = []  # completed bin means, the last m
        self.cur_bin = -1
        self.cur_sum = 0.0
        self.cur_n = 0
        self.ring = np.zeros((self.R, self.m), dtype=np.int8)
        self.raw = np.zeros((self.R, self.m))  # norm=abs: the windows' values (float16 would do)
        self.ring_end = np.full(self.R, -(10**12), dtype=np.int64)  # bin index of each end
        self.ring_pos = 0
        self.ring_n = 0
        self.calib = np.zeros((1, 1, N_BINS))
        self.quantiles = np.zeros((1, 1, 4))
        self.n_calib = 0
        self.refreshed = math.nan

    def nbytes(self) -> int:
        ring = self.R * self.m * 2 if self.s["norm"] == "abs" else self.ring.nbytes
        return ring + self.calib.nbytes + self.quantiles.nbytes

    def _shape(self, w: np.ndarray, scale: float) -> np.ndarray:
        return (w - w.mean()) / scale

    def update(self, ts: float, x: float, scale: float) -> float:
        """Score the window ending at this sample (surprise), then learn."""
        s = self.s
        if not math.isnan(self.last_ts):
            self.intervals.append(ts - self.last_ts)
        self.last_ts = ts
        if math.isnan(self.g):
            if len(self.intervals) < 30:
                return 0.0
            self.g = float(s["span"]) / self.m
            if int(s["floor"]):
                self.g = max(self.g, float(np.median(self.intervals)))
        b = int(ts // self.g)
        if b != self.cur_bin:
            if self.cur_n:  # close the current bin, carry forward over empty ones
                mean = self.cur_sum / self.cur_n
                self.bins.append(mean)
                gap = min(b - self.cur_bin - 1, self.m)
                self.bins.extend([mean] * gap)
                self.bins = self.bins[-self.m :]
                for end in range(self.cur_bin, self.cur_bin + gap + 1):
                    if end % int(s["stride"]) == 0 and len(self.bins) == self.m:
                        self._keep(end, scale)
            self.cur_bin, self.cur_sum, self.cur_n = b, 0.0, 0
        self.cur_sum += x
        self.cur_n += 1
        if len(self.bins) < self.m - 1:
            return 0.0
        window = np.array(self.bins[-(self.m - 1) :] + [self.cur_sum / self.cur_n])
        cur = self._shape(window, scale)
        usable = self.ring_end[: self.ring_n] <= b - self.m  # no overlap with the current one
        if usable.sum() < self.k:
            return 0.0
        if s["norm"] == "abs":
            d = np.sqrt(((self.raw[: self.ring_n][usable] - window) ** 2).mean(axis=1)) / scale
        else:
            past = self.ring[: self.ring_n][usable].astype(np.float64) / 16.0
            d = np.sqrt(((past - cur) ** 2).mean(axis=1))
        k = self.k
        nov = max(float(np.partition(d, k - 1)[:k].mean()), float(s["dfloor"]))
        pn = float(s["probation_n"])
        sur = counted_surprise(
            self.quantiles[0, 0], self.calib[0, 0], nov, float(s["min_tail"]), pn
        )
        # learn: count this novelty, refresh the percentiles now and then
        self.calib[0, 0, bin_of(nov)] += 1.0
        self.n_calib += 1
        if self.n_calib % int(s["refresh_every"]) == 0 or self.n_calib <= pn:
            fade = 1.0
            if self.refreshed == self.refreshed:
                fade = math.exp(-max(ts - self.refreshed, 0.0) / float(s["calib_tau"]))
            self.refreshed = ts
            refresh(self.calib, self.quantiles, fade)
        return sur

    def _keep(self, end: int, scale: float) -> None:
        w = self._shape(np.array(self.bins), scale)
        self.ring[self.ring_pos] = np.clip(np.round(w * 16.0), -127, 127).astype(np.int8)
        self.raw[self.ring_pos] = self.bins
        self.ring_end[self.ring_pos] = end
        self.ring_pos = (self.ring_pos + 1) % self.R
        self.ring_n = min(self.ring_n + 1, self.R)


def combine(a: float, b: float, how: str) -> float:
    if how == "max":
        return max(a, b)
    if how == "fisher":  # -log10 of Fisher's p for two p-values (chi-square, 4 dof)
        ln_prod = -(a + b) * math.log(10.0)  # ln(p1 p2) <= 0
        return -(ln_prod + math.log1p(-ln_prod)) / math.log(10.0)
    if how == "layer":
        return a
    if how == "window":
        return b
    raise SystemExit(f"unknown combine {how!r}")


def detect(df: pd.DataFrame) -> np.ndarray:
    s = settings()
    times, surprise, accepted, spread = layer(df)
    values = df["value"].astype(float).to_numpy()
    view = WindowView(s)
    out = np.zeros(len(df))
    t0 = time.perf_counter()
    for i in range(len(df)):
        if not accepted[i]:
            continue
        sw = view.update(float(times[i]), float(values[i]), float(spread[i]))
        c = combine(float(surprise[i]), sw, str(s["combine"]))
        out[i] = c / (c + 5.0)
    spent = time.perf_counter() - t0
    stats = os.environ.get("NAB_WINDOW_STATS")
    if stats:
        with open(stats, "a") as f:
            f.write(f"{len(df)} {spent:.4f} {view.g} {view.nbytes()}\n")
    return out
