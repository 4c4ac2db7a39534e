"""Isolation Forest anomaly detector with calibrated scores, attribution and safe storage.

Usage::

    det = AnomalyDetector(contamination=0.05).fit(train_frame)
    batch = det.score_frame(frame)                    # calibrated scores, flags
    hist = det.history_from(recent)                  # a host's recent past
    result = det.score_sample({"cpu_usage_percent": 97.0}, timestamp=ts, history=hist)
    blob = det.to_bytes(); det2 = AnomalyDetector.from_bytes(blob, det.sha256(blob))

The anomaly score of a sample combines three views of its features, each mapped to
[0, 1] through its training distribution (the share of training samples it exceeds):

- the Isolation Forest path length on the extracted features, averaged over the last
  ``smoothing`` (20) samples (causal), which catches unusual combinations that persist;
- the largest per-metric level shift: the mean of the last 5 samples against the mean of
  the previous hour, each metric measured against the larger of its own 99.9th training
  percentile and its recent volatility, the 2nd-largest of its hourly shift peaks over the
  ``shift_memory_hours`` (24) whole hours before the sample (``ShiftMemory``). This catches
  a single metric moving while the others look normal, and does not alarm again and again
  on a metric that has turned volatile since training (0 turns the memory off);
- the largest per-metric jump of the sample itself against the previous hour's mean,
  relative to its 99.9th training percentile: a lone extreme sample scores high (what
  ``POST /predict/anomaly`` reports), though alone it cannot open an incident, which
  needs ``ML_ANOMALY_CONSECUTIVE`` samples in a row.

The largest of the three is calibrated once more against training, so the final score is
the share of training samples that scored lower: a threshold of 0.99 means "rarer than
99 % of training" for every model version. Scores above every training score keep
growing towards 1 on an exponential tail, so they stay ordered. Models stored before the
jump view or the memory score as they were trained.

The threshold (``threshold_method``) is set on the calibrated training scores, either

- ``"quantile"`` (default): their ``1 - contamination`` quantile, or
- ``"pot"``: Peaks-Over-Threshold (Siffer et al., *Anomaly Detection in Streams with
  Extreme Value Theory*, KDD 2017; used by OmniAnomaly on SMD), see ``pot_threshold``. The
  calibrated score is bounded by 1 and uniform on training (a GPD with shape -1, where
  maximum likelihood is irregular), so the tail is fitted on its surprise
  ``-log(1 - score)``, which is exponential on training (shape 0): a Generalized Pareto
  Distribution is fitted to the excesses over the ``pot_level`` quantile and the threshold
  is where the fitted tail probability equals ``pot_risk``, mapped back to the score.
  Because of the calibration this lands close to the ``1 - pot_risk`` training quantile;
  the GPD fit smooths it and extrapolates when ``pot_risk`` is below one training row.

Severity cut-offs on that calibrated score (see ``severity``):
``low`` < 0.95 <= ``medium`` < 0.99 <= ``high`` < 0.999 <= ``critical``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import skops.io as sio
from scipy.stats import genpareto
from sklearn.ensemble import IsolationForest

from services.trainer.features import (
    HISTORY_MARGIN,
    FeatureConfig,
    FeatureExtractor,
    FeatureSet,
    RecentHistory,
    ShiftMemory,
    frame_times,
    trailing_peak,
)
from shared.severity import Severity

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Feedback = Literal["false_positive", "true_positive"]
ThresholdMethod = Literal["quantile", "pot"]
THRESHOLD_METHODS: tuple[ThresholdMethod, ...] = ("quantile", "pot")
# Peaks-Over-Threshold defaults from the literature, fixed before any SMD test result:
# the initial threshold at the 98 % quantile (Siffer et al. 2017; their reference SPOT
# ``initialize(level=0.98)``, OmniAnomaly's ``pot_eval(level=0.02)`` on the negated score)
# and the risk q = 1e-3 (OmniAnomaly's ``pot_eval`` default; Siffer's SPOT default is 1e-4).
POT_LEVEL = 0.98
POT_RISK = 1e-3
_POT_MIN_PEAKS = 10  # fewer excesses than this: no fit, the empirical quantile instead

SEVERITY_CUTOFFS: tuple[tuple[float, Severity], ...] = (
    (0.999, "critical"),
    (0.99, "high"),
    (0.95, "medium"),
)
FORMAT_VERSION = 1
# Types skops must trust to rebuild an Isolation Forest. The tree arrays are also
# bounds-checked after loading, and the whole file is checked against its sha256.
_TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree"]
_SMALL_BATCH = 64  # below this many rows the numpy forest beats scikit-learn's overhead
# From this many rows the rows are split between threads, each scored by scikit-learn (its
# tree walk releases the GIL). Each row's score is computed exactly as in one thread (a
# row's trees are summed in the same order), so the result is the same bit for bit.
_PARALLEL_ROWS = 4096
_SCORING_THREADS = min(2, os.cpu_count() or 1)


def set_scoring_threads(n: int) -> None:
    """Threads for scoring large batches in this process (1: none). The training worker
    sets 1, so a fit never takes the core the service's event loop runs on."""
    global _SCORING_THREADS
    _SCORING_THREADS = max(1, int(n))


# A metric's shift is measured against at least the 2nd-largest of its hourly shift peaks
# over the last 24 hours, the forest score is averaged over the last 20 samples and a lone
# sample's jump is a view of its own. All chosen without SMD test labels
# (bench/bench_smd_proxy.py: the last 30 % of each SMD machine's train half held out from
# fitting, with and without injected shifts; figures in bench/RESULTS.md), checked on
# synthetic months of other seeds.
SHIFT_MEMORY_HOURS = 24
SHIFT_MEMORY_RANK = 2


def severity(score: float) -> Severity:
    """Severity of a calibrated score: critical >= 0.999, high >= 0.99, medium >= 0.95."""
    for cut, name in SEVERITY_CUTOFFS:
        if score >= cut:
            return name
    return "low"


def pot_threshold(scores: FloatArray, *, level: float = POT_LEVEL, risk: float = POT_RISK) -> float:
    """Peaks-Over-Threshold quantile of ``scores`` (Siffer et al. 2017, the batch POT step).

    Fits a Generalized Pareto Distribution (maximum likelihood, location 0) to the excesses
    of ``scores`` over their ``level`` quantile ``t`` and returns the value ``z`` with
    fitted tail probability ``P(score > z) = risk``:
    ``z = t + sigma / xi * ((risk * n / n_t) ** -xi - 1)`` (``t - sigma * log(...)`` at
    ``xi = 0``), with ``n_t`` excesses among ``n`` scores. Meant for scores whose upper tail
    is unbounded or heavy; with fewer than 10 excesses it returns the ``1 - risk`` quantile.
    """
    if not 0.0 < level < 1.0 or not 0.0 < risk < 1.0 - level:
        raise ValueError("POT needs 0 < level < 1 and 0 < risk < 1 - level")
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no finite scores to fit")
    t = float(np.quantile(s, level))
    excess = s[s > t] - t
    if len(excess) < _POT_MIN_PEAKS or float(np.ptp(excess)) <= 0.0:
        return float(np.quantile(s, 1.0 - risk))
    xi, _, sigma = genpareto.fit(excess, floc=0.0)
    ratio = risk * len(s) / len(excess)
    if abs(xi) < 1e-9:
        return t - float(sigma) * float(np.log(ratio))
    return t + float(sigma) / float(xi) * float(ratio ** -float(xi) - 1.0)


def _average_path_length(n: FloatArray) -> FloatArray:
    """c(n) of Liu et al.: mean path length of an unsuccessful BST search (as scikit-learn)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(slots=True)
class FlatForest:
    """All trees of a fitted Isolation Forest in flat arrays, scored with vectorised numpy.

    Leaves loop to themselves (threshold -inf sends every value right, to itself), so
    every sample takes exactly ``depth`` steps and all trees advance together.
    """

    feature: IntArray  # split feature per node (0 at leaves)
    threshold: npt.NDArray[np.float32]  # float32 rounded down: x32 <= t32 <=> x32 <= t64
    right: IntArray  # right child per node (the left child is node + 1)
    leaf_value: FloatArray  # depth + c(n_node_samples) at leaves, 0 elsewhere
    roots: IntArray
    depth: int
    normaliser: float  # c(max_samples)

    @classmethod
    def from_forest(cls, forest: IsolationForest) -> FlatForest:
        feats: list[IntArray] = []
        thrs: list[FloatArray] = []
        rights: list[IntArray] = []
        leaves: list[FloatArray] = []
        roots: list[int] = []
        offset = 0
        depth = 0
        for est, cols in zip(forest.estimators_, forest.estimators_features_, strict=True):
            tree = est.tree_
            count = int(tree.node_count)
            left = np.asarray(tree.children_left, dtype=np.int64)
            right = np.asarray(tree.children_right, dtype=np.int64)
            is_leaf = left < 0
            internal = np.flatnonzero(~is_leaf)
            if not np.array_equal(left[internal], internal + 1):
                raise ValueError("unexpected tree layout: left child is not the next node")
            node_depth = np.zeros(count, dtype=np.int64)
            level = internal[:1] if len(internal) else internal  # the root, if it splits
            while len(level):  # one level at a time: a handful of steps, not a node loop
                children = np.concatenate([left[level], right[level]])
                node_depth[children] = node_depth[level[0]] + 1
                level = children[~is_leaf[children]]
            cols_arr = np.asarray(cols, dtype=np.int64)
            feat = np.where(is_leaf, 0, cols_arr[np.maximum(tree.feature, 0)])
            samples = np.asarray(tree.n_node_samples, dtype=np.float64)
            leaf_val = np.where(is_leaf, node_depth + _average_path_length(samples), 0.0).astype(
                np.float64
            )
            feats.append(feat.astype(np.int64))
            thrs.append(np.where(is_leaf, -np.inf, tree.threshold).astype(np.float64))
            rights.append(np.where(is_leaf, np.arange(count), right) + offset)
            leaves.append(leaf_val)
            roots.append(offset)
            depth = max(depth, int(node_depth.max()))
            offset += count
        thr64 = np.concatenate(thrs)
        thr32 = thr64.astype(np.float32)
        too_high = thr32.astype(np.float64) > thr64
        thr32[too_high] = np.nextafter(thr32[too_high], np.float32(-np.inf))
        return cls(
            feature=np.concatenate(feats),
            threshold=thr32,
            right=np.concatenate(rights).astype(np.int64),
            leaf_value=np.concatenate(leaves),
            roots=np.asarray(roots, dtype=np.int64),
            depth=depth,
            normaliser=float(_average_path_length(np.array([float(forest.max_samples_)]))[0]),
        )

    def score_samples(self, x: FloatArray) -> FloatArray:
        """scikit-learn's ``IsolationForest.score_samples`` (higher = more normal)."""
        xs = np.asarray(x, dtype=np.float32)
        n, d = xs.shape
        flat = xs.ravel()
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        row_offset = (np.arange(n, dtype=np.int64) * d)[:, None]
        for _ in range(self.depth):
            go_left = flat[self.feature[node] + row_offset] <= self.threshold[node]
            node = np.where(go_left, node + 1, self.right[node])
        mean_depth = self.leaf_value[node].sum(axis=1) / len(self.roots)
        out: FloatArray = -np.power(2.0, -mean_depth / self.normaliser)
        return out


@dataclass(slots=True)
class Calibrator:
    """Monotone map of a raw score to [0, 1): its position in the training distribution."""

    knots: FloatArray  # raw-score quantiles, strictly increasing
    probs: FloatArray  # their cumulative shares, ending at top < 1
    tail: float  # e-folding length of the tail beyond the largest training score

    @classmethod
    def fit(cls, scores: FloatArray, n_knots: int = 1001) -> Calibrator:
        s = np.sort(np.asarray(scores, dtype=np.float64))
        n = len(s)
        probs = np.linspace(0.0, 1.0, n_knots)
        knots = np.quantile(s, probs)
        top = n / (n + 1.0)
        knots, first = np.unique(knots, return_index=True)
        # For tied knots keep the largest share, so a tie maps to where the run ends.
        last = np.r_[first[1:] - 1, n_knots - 1]
        p = probs[last] * top
        spread = float(knots[-1] - np.quantile(s, 0.99))
        tail = spread if spread > 0 else max(float(np.std(s)), 1e-12)
        return cls(knots=knots, probs=p, tail=tail)

    def __call__(self, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        top = self.probs[-1]
        if x.shape == (1,):  # one sample (the real-time path): skip the array machinery
            v = float(x[0])
            last = float(self.knots[-1])
            if v > last:
                return np.array([top + (1.0 - top) * -math.expm1(-(v - last) / self.tail)])
            return np.array([np.interp(v, self.knots, self.probs, left=0.0)])
        inside: FloatArray = np.interp(x, self.knots, self.probs, left=0.0)
        beyond = top + (1.0 - top) * -np.expm1(-(x - self.knots[-1]) / self.tail)
        out: FloatArray = np.where(x > self.knots[-1], beyond, inside)
        return out


@dataclass(frozen=True, slots=True)
class MetricContribution:
    metric: str
    observed: float
    expected: float
    share: float  # of the summed per-metric deviation over all metrics


@dataclass(frozen=True, slots=True)
class AnomalyResult:
    score: float
    is_anomaly: bool
    severity: Severity
    threshold: float
    contributions: list[MetricContribution]


@dataclass(slots=True)
class BatchScores:
    score: FloatArray  # calibrated, 0..1
    is_anomaly: npt.NDArray[np.bool_]
    forest_score: FloatArray  # scikit-learn score_samples of each row (higher = normal)
    features: FeatureSet


@dataclass
class AnomalyDetector:
    """Isolation Forest on causal features, with calibrated 0..1 scores."""

    contamination: float = 0.05
    n_estimators: int = 100
    max_samples: int = 256
    smoothing: int = 20
    random_state: int = 0
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    threshold: float = 0.95
    threshold_method: ThresholdMethod = "quantile"
    pot_level: float = POT_LEVEL
    pot_risk: float = POT_RISK
    shift_memory_hours: int = SHIFT_MEMORY_HOURS
    jump_view: bool = True
    extractor: FeatureExtractor = field(init=False)
    forest: IsolationForest | None = field(init=False, default=None)
    flat: FlatForest | None = field(init=False, default=None)
    mean: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    scale: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    dev_ref: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    z_ref: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    cal_forest: Calibrator | None = field(init=False, default=None)
    cal_dev: Calibrator | None = field(init=False, default=None)
    cal_jump: Calibrator | None = field(init=False, default=None)
    jump_ref: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    cal_final: Calibrator | None = field(init=False, default=None)
    n_train: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0.0 < self.contamination <= 0.5:
            raise ValueError("contamination must lie in (0, 0.5]")
        if self.n_estimators < 1 or self.smoothing < 1:
            raise ValueError("n_estimators and smoothing must be at least 1")
        if not 0 <= self.shift_memory_hours <= 24 * 14:
            raise ValueError("shift_memory_hours must lie in 0..336")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(f"threshold_method must be one of {THRESHOLD_METHODS}")
        if not 0.0 < self.pot_level < 1.0 or not 0.0 < self.pot_risk < 1.0 - self.pot_level:
            raise ValueError("POT needs 0 < pot_level < 1 and 0 < pot_risk < 1 - pot_level")
        self.extractor = FeatureExtractor(self.feature_config)

    # -- training ------------------------------------------------------------------

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.extractor.metrics

    @property
    def training_medians(self) -> dict[str, float]:
        return self.extractor.training_medians

    def fit(
        self,
        frame: pd.DataFrame,
        metrics: Sequence[str] | None = None,
        *,
        normal: npt.NDArray[np.bool_] | None = None,
    ) -> AnomalyDetector:
        """Learn normal behaviour from a time-ordered frame.

        ``normal``: a mask of the rows known to be normal (a labelled history). The features
        are still computed over every row (they look back in time), but the forest, the
        calibration and the threshold learn from the normal rows only.
        """
        mask = np.ones(len(frame), dtype=bool) if normal is None else np.asarray(normal, bool)
        if mask.shape != (len(frame),) or not mask.any():
            raise ValueError("the normal mask must have one entry per row and select some")
        self.extractor.fit(frame[mask] if normal is not None else frame, metrics)
        feats = self.extractor.transform(frame)
        x = feats.matrix
        self.mean = x[mask].mean(axis=0)
        std = x[mask].std(axis=0)
        self.scale = np.where(std > 1e-12, std, 1.0)
        xs = self._standardise(x)
        self.forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, int(mask.sum())),
            random_state=self.random_state,
        ).fit(xs[mask])
        self.flat = FlatForest.from_forest(self.forest)
        forest_scores = self.forest.score_samples(xs)
        forest_anom = _causal_mean(-forest_scores, self.smoothing)[mask]
        ratios = np.abs(feats.deviation)[mask]
        self.dev_ref = np.maximum(np.quantile(ratios, 0.999, axis=0), 1.0)
        self.z_ref = np.maximum(np.quantile(np.abs(feats.z[mask]), 0.999, axis=0), 1.0)
        # The memory sees every row, as it would in service (labelled anomalies included).
        dev_score = self._shift_score(feats, self._batch_memory_ref(feats))[mask]
        jumps = np.abs(feats.z - feats.baseline)[mask]
        self.jump_ref = np.maximum(np.quantile(jumps, 0.999, axis=0), 1.0)
        jump_anom = (jumps / self.jump_ref).max(axis=1)  # ``_jump_score`` of the masked rows
        self.cal_forest = Calibrator.fit(forest_anom)
        self.cal_dev = Calibrator.fit(dev_score)
        self.cal_jump = Calibrator.fit(jump_anom) if self.jump_view else None
        combined = np.maximum(self.cal_forest(forest_anom), self.cal_dev(dev_score))
        if self.cal_jump is not None:
            combined = np.maximum(combined, self.cal_jump(jump_anom))
        self.cal_final = Calibrator.fit(combined)
        final = self.cal_final(combined)
        if self.threshold_method == "pot":
            # The calibrated score is uniform on training; its surprise is exponential.
            surprise = -np.log1p(-np.minimum(final, 1.0 - 1e-15))
            z = pot_threshold(surprise, level=self.pot_level, risk=self.pot_risk)
            self.threshold = float(min(-np.expm1(-z), 1.0 - 1e-12))
        else:
            self.threshold = float(np.quantile(final, 1.0 - self.contamination))
        self.n_train = int(mask.sum())
        return self

    # -- scoring -------------------------------------------------------------------

    def _standardise(self, x: FloatArray) -> FloatArray:
        out: FloatArray = (x - self.mean) / self.scale
        return out

    def _require_fitted(self) -> tuple[FlatForest, Calibrator, Calibrator, Calibrator]:
        if self.flat is None or self.cal_forest is None or self.cal_dev is None:
            raise RuntimeError("the detector is not trained")
        assert self.cal_final is not None
        return self.flat, self.cal_forest, self.cal_dev, self.cal_final

    def forest_scores(self, features: FloatArray) -> FloatArray:
        """scikit-learn-equal ``score_samples`` of feature rows (numpy fast path if small)."""
        flat, *_ = self._require_fitted()
        xs = self._standardise(features)
        if len(xs) >= _PARALLEL_ROWS and self.forest is not None and _SCORING_THREADS > 1:
            chunks = np.array_split(xs, _SCORING_THREADS)
            with ThreadPoolExecutor(_SCORING_THREADS) as pool:
                threaded: FloatArray = np.concatenate(
                    list(pool.map(self.forest.score_samples, chunks))
                )
            return threaded
        if len(xs) >= _SMALL_BATCH and self.forest is not None:
            out: FloatArray = self.forest.score_samples(xs)
            return out
        return flat.score_samples(xs)

    def _shift_score(self, feats: FeatureSet, memory_ref: FloatArray | None) -> FloatArray:
        """Largest per-metric level shift of each row relative to its reference."""
        ref = self.dev_ref if memory_ref is None else np.maximum(self.dev_ref, memory_ref)
        out: FloatArray = (np.abs(feats.deviation) / ref).max(axis=1)
        return out

    def _jump_score(self, feats: FeatureSet) -> FloatArray:
        """Largest per-metric jump of each row: the sample itself against the previous
        hour's mean, relative to that metric's 99.9th training percentile."""
        out: FloatArray = (np.abs(feats.z - feats.baseline) / self.jump_ref).max(axis=1)
        return out

    def _batch_memory_ref(self, feats: FeatureSet) -> FloatArray | None:
        """Shift-memory reference of every row of a batch that starts with an empty memory."""
        if not self.shift_memory_hours:
            return None
        return trailing_peak(
            feats.hour,
            np.abs(feats.deviation),
            window=self.shift_memory_hours,
            rank=SHIFT_MEMORY_RANK,
        )

    def _combine(
        self, feats: FeatureSet, forest_anom: FloatArray, memory_ref: FloatArray | None
    ) -> FloatArray:
        _, cal_forest, cal_dev, cal_final = self._require_fitted()
        dev_score = self._shift_score(feats, memory_ref)
        combined = np.maximum(cal_forest(forest_anom), cal_dev(dev_score))
        if self.cal_jump is not None:
            combined = np.maximum(combined, self.cal_jump(self._jump_score(feats)))
        return cal_final(combined)

    def score_features(
        self, feats: FeatureSet, *, memory: ShiftMemory | None = None, start: int = 0
    ) -> BatchScores:
        """Score consecutive rows of one host (smoothing runs along the rows).

        With a host's ``memory``: rows from ``start`` on are new (not in the memory yet; the
        earlier rows are look-back only and their scores are not meaningful). Their shifts
        are measured against the memory and then folded into it.
        """
        forest = self.forest_scores(feats.matrix)
        ref: FloatArray | None
        if memory is not None and self.shift_memory_hours:
            # Rows before ``start`` are look-back only: their reference is not worth computing.
            ref = np.zeros_like(feats.deviation)
            shift = np.abs(feats.deviation[start:])
            ref[start:] = memory.reference(feats.hour[start:], shift, SHIFT_MEMORY_RANK)
            memory.fold(feats.hour[start:], shift)
        else:
            ref = self._batch_memory_ref(feats)
        score = self._combine(feats, _causal_mean(-forest, self.smoothing), ref)
        return BatchScores(
            score=score, is_anomaly=score >= self.threshold, forest_score=forest, features=feats
        )

    def score_frame(self, frame: pd.DataFrame) -> BatchScores:
        """Score every row of a time-ordered frame of one host."""
        return self.score_features(self.extractor.transform(frame))

    @property
    def history_samples(self) -> int:
        """Samples of a host's past that a new history wants: its feature look-back and the
        shift memory's hours (``seed_history``)."""
        cfg = self.extractor.config
        memory = int(np.ceil((self.shift_memory_hours + 1) * 3600.0 / cfg.interval_s))
        margin = self.smoothing + HISTORY_MARGIN
        return cfg.lookback + margin + (memory if self.shift_memory_hours else 0)

    def new_history(self) -> RecentHistory:
        """An empty per-host buffer of recent samples for ``score_sample``."""
        cfg = self.extractor.config
        history = RecentHistory(
            self.extractor, capacity=cfg.lookback + self.smoothing + HISTORY_MARGIN
        )
        if self.shift_memory_hours:
            history.memory = ShiftMemory(self.shift_memory_hours, len(self.metrics))
        return history

    def history_from(self, frame: pd.DataFrame) -> RecentHistory:
        """A history seeded from a host's recent samples (``seed_history``), the last
        ``history_samples`` of them counting."""
        tail = frame.iloc[-self.history_samples :] if len(frame) else frame
        history = self.new_history()
        if len(tail):
            times = frame_times(tail)
            values = tail.reindex(columns=list(self.metrics)).to_numpy(dtype=np.float64)
            order = np.argsort(times, kind="stable")
            self.seed_history(history, times[order], values[order])
        return history

    def seed_history(self, history: RecentHistory, times: FloatArray, values: FloatArray) -> None:
        """Fill an empty history with a host's past samples (time-ordered) as if each had
        been scored: their shifts folded into its memory, their raw scores cached."""
        if len(history):
            raise ValueError("seed_history needs an empty history")
        if len(times) == 0:
            return
        feats = self.extractor.transform_arrays(times, values.copy())
        if history.memory is not None:
            history.memory.fold(feats.hour, np.abs(feats.deviation))
        first = max(0, len(times) - history.capacity)
        for t, row in zip(times[first:], values[first:], strict=True):
            history.append_array(row, float(t))
        history.scores()[:] = -self.forest_scores(feats.matrix[first:])
        history.unfolded = 0

    def score_sample(
        self,
        sample: Mapping[str, float],
        *,
        timestamp: datetime | pd.Timestamp | str | float,
        history: RecentHistory,
        top_k: int = 3,
    ) -> AnomalyResult:
        """Score one new sample of a host; appends it to that host's ``history``."""
        history.append(sample, timestamp)
        # Raw forest scores of the last ``smoothing`` rows: cached ones are reused, so only
        # rows never scored (usually just the new one) need features and the forest.
        cached = history.scores()[-self.smoothing :]
        unknown = np.flatnonzero(np.isnan(cached))
        need = len(cached) - int(unknown[0]) if len(unknown) else 1
        rows = min(max(need, history.unfolded), len(history))
        feats = history.features(rows=rows)
        fresh = self.forest_scores(feats.matrix[-need:])
        cached[len(cached) - need :] = -fresh
        # The last row of ``_causal_mean``: the same left-to-right sum, then the mean.
        forest_anom = np.array([sum(cached.tolist()) / len(cached)])
        last = _last_row(feats)
        ref = None
        if history.memory is not None:
            new = _rows(feats, slice(len(feats.hour) - history.unfolded, None))
            shift = np.abs(new.deviation)
            ref = history.memory.reference(new.hour, shift, SHIFT_MEMORY_RANK)[-1:]
            history.memory.fold(new.hour, shift)
        history.unfolded = 0
        score = float(self._combine(last, forest_anom, ref)[0])
        return AnomalyResult(
            score=score,
            is_anomaly=score >= self.threshold,
            severity=severity(score),
            threshold=self.threshold,
            contributions=self.contributions(last, 0, top_k=top_k),
        )

    # -- explanation ---------------------------------------------------------------

    def metric_deviation(self, feats: FeatureSet) -> FloatArray:
        """Per-metric deviation ratio of each row (rows, metrics): how unusual each metric is.

        The larger of the level shift against the recent baseline and the distance from
        the training median, each relative to its 99.9th training percentile.
        """
        dev = np.abs(feats.deviation) / self.dev_ref
        lvl = np.abs(feats.z) / self.z_ref
        out: FloatArray = np.maximum(dev, lvl)
        return out

    def contributions(
        self, feats: FeatureSet, row: int, *, top_k: int = 3
    ) -> list[MetricContribution]:
        """Top metrics of one row with observed and expected values and share of the score.

        Shares are each metric's deviation ratio over the sum across all metrics, so the
        shares of all metrics sum to 1. The expected value is the recent baseline when
        the level shift dominates, else the training median.
        """
        ratio_dev = np.abs(feats.deviation[row]) / self.dev_ref
        ratio_lvl = np.abs(feats.z[row]) / self.z_ref
        ratio = np.maximum(ratio_dev, ratio_lvl)
        total = float(ratio.sum())
        order = np.argsort(-ratio, kind="stable")[:top_k]
        fx = self.extractor
        finite = np.isfinite(fx.scales)
        out: list[MetricContribution] = []
        for i in order:
            if ratio_dev[i] >= ratio_lvl[i] and finite[i]:
                expected = fx.medians[i] + feats.baseline[row, i] * fx.scales[i]
            else:
                expected = fx.medians[i]
            out.append(
                MetricContribution(
                    metric=fx.metrics[i],
                    observed=float(feats.values[row, i]),
                    expected=float(expected),
                    share=float(ratio[i] / total) if total > 0 else 1.0 / len(ratio),
                )
            )
        return out

    def top_metrics(self, feats: FeatureSet, rows: IntArray, k: int = 3) -> list[list[str]]:
        """Names of the ``k`` most deviating metrics of each of ``rows``."""
        ratio = self.metric_deviation(_rows(feats, rows))
        top = np.argsort(-ratio, axis=1, kind="stable")[:, :k]
        names = self.extractor.metrics
        return [[names[j] for j in r] for r in top]

    # -- threshold feedback --------------------------------------------------------

    def adjust_threshold(self, feedback: Feedback, score: float, *, rate: float = 0.5) -> float:
        """Move the threshold after operator feedback on a scored sample; returns the change.

        A false positive at ``score`` pulls the threshold towards just above that score; a
        true positive that was missed pulls it towards just below. The threshold stays in
        [0.5, 0.9999]; feedback that agrees with the current threshold changes nothing.
        """
        if not 0.0 <= score <= 1.0:
            raise ValueError("score must lie in [0, 1]")
        margin = 0.1 * (1.0 - score)
        before = self.threshold
        if feedback == "false_positive":
            target = score + margin
            if target > before:
                self.threshold = before + rate * (target - before)
        elif feedback == "true_positive":
            target = score - margin
            if target < before:
                self.threshold = before - rate * (before - target)
        else:
            raise ValueError("feedback must be 'false_positive' or 'true_positive'")
        self.threshold = float(min(max(self.threshold, 0.5), 0.9999))
        return self.threshold - before

    # -- storage -------------------------------------------------------------------

    @staticmethod
    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def to_bytes(self) -> bytes:
        """Serialise without pickle: an npz of arrays, JSON config and the skops forest."""
        flat, cal_forest, cal_dev, cal_final = self._require_fitted()
        assert self.forest is not None
        fx = self.extractor
        config = {
            "format_version": FORMAT_VERSION,
            "contamination": self.contamination,
            "n_estimators": self.n_estimators,
            "max_samples": self.max_samples,
            "smoothing": self.smoothing,
            "random_state": self.random_state,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "pot_level": self.pot_level,
            "pot_risk": self.pot_risk,
            "shift_memory_hours": self.shift_memory_hours,
            "n_train": self.n_train,
            "metrics": list(fx.metrics),
            "feature_config": fx.config.to_dict(),
            "depth": flat.depth,
            "normaliser": flat.normaliser,
            "tails": [cal_forest.tail, cal_dev.tail, cal_final.tail]
            + ([self.cal_jump.tail] if self.cal_jump is not None else []),
        }
        arrays: dict[str, npt.NDArray[Any]] = {
            "config": np.frombuffer(json.dumps(config).encode(), dtype=np.uint8),
            "forest": np.frombuffer(sio.dumps(self.forest), dtype=np.uint8),
            "medians": fx.medians,
            "scales": fx.scales,
            "mean": self.mean,
            "scale": self.scale,
            "dev_ref": self.dev_ref,
            "z_ref": self.z_ref,
        }
        if self.cal_jump is not None:
            arrays["jump_ref"] = self.jump_ref
        for name, cal in (
            ("cal_forest", cal_forest),
            ("cal_dev", cal_dev),
            ("cal_final", cal_final),
            *((("cal_jump", self.cal_jump),) if self.cal_jump is not None else ()),
        ):
            arrays[f"{name}_knots"] = cal.knots
            arrays[f"{name}_probs"] = cal.probs
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, sha256: str) -> AnomalyDetector:
        """Load a detector saved by ``to_bytes``; raises ValueError if the checksum differs."""
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ValueError(f"model checksum mismatch: expected {sha256}, got {actual}")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arr = {k: npz[k] for k in npz.files}
        config = json.loads(arr["config"].tobytes().decode())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {config.get('format_version')!r}")
        det = cls(
            contamination=float(config["contamination"]),
            n_estimators=int(config["n_estimators"]),
            max_samples=int(config["max_samples"]),
            smoothing=int(config["smoothing"]),
            random_state=int(config["random_state"]),
            feature_config=FeatureConfig.from_dict(config["feature_config"]),
            threshold=float(config["threshold"]),
            # Models stored before POT carry no method: they used the quantile rule.
            threshold_method=config.get("threshold_method", "quantile"),
            pot_level=float(config.get("pot_level", POT_LEVEL)),
            pot_risk=float(config.get("pot_risk", POT_RISK)),
            # Models stored before the shift memory had none.
            shift_memory_hours=int(config.get("shift_memory_hours", 0)),
        )
        fx = det.extractor
        fx.metrics = tuple(str(m) for m in config["metrics"])
        fx.medians = arr["medians"]
        fx.scales = arr["scales"]
        det.mean, det.scale = arr["mean"], arr["scale"]
        det.dev_ref, det.z_ref = arr["dev_ref"], arr["z_ref"]
        tails = [float(t) for t in config["tails"]]
        det.cal_forest = Calibrator(arr["cal_forest_knots"], arr["cal_forest_probs"], tails[0])
        det.cal_dev = Calibrator(arr["cal_dev_knots"], arr["cal_dev_probs"], tails[1])
        det.cal_final = Calibrator(arr["cal_final_knots"], arr["cal_final_probs"], tails[2])
        det.jump_view = "cal_jump_knots" in arr  # models stored before the view have none
        if det.jump_view:
            det.cal_jump = Calibrator(arr["cal_jump_knots"], arr["cal_jump_probs"], tails[3])
            det.jump_ref = arr["jump_ref"]
        forest = sio.loads(arr["forest"].tobytes(), trusted=_TRUSTED_SKOPS_TYPES)
        if not isinstance(forest, IsolationForest):
            raise ValueError("stored forest is not an IsolationForest")
        _check_forest(forest, n_features=len(det.mean))
        det.forest = forest
        det.flat = FlatForest.from_forest(forest)
        det.n_train = int(config["n_train"])
        return det


def _check_forest(forest: IsolationForest, *, n_features: int) -> None:
    """Bounds-check every tree so a crafted file cannot make scikit-learn read out of range."""
    for est, cols in zip(forest.estimators_, forest.estimators_features_, strict=True):
        tree = est.tree_
        count = int(tree.node_count)
        left = np.asarray(tree.children_left)
        right = np.asarray(tree.children_right)
        ok = (
            len(left) == count
            and bool(np.all((left == -1) | ((left > 0) & (left < count))))
            and bool(np.all((right == -1) | ((right > 0) & (right < count))))
            and bool(np.all(np.asarray(tree.feature) < len(cols)))
            and bool(np.all((np.asarray(cols) >= 0) & (np.asarray(cols) < n_features)))
        )
        if not ok:
            raise ValueError("stored forest has out-of-range tree arrays")


def _causal_mean(x: FloatArray, k: int) -> FloatArray:
    """Mean of each value and up to ``k - 1`` values before it (same order on any tail)."""
    if k <= 1:
        return x
    n = len(x)
    padded = np.concatenate([np.zeros(k - 1), x])
    sums = padded[0:n].copy()
    for j in range(1, k):
        sums += padded[j : j + n]
    counts = np.minimum(np.arange(1, n + 1), k).astype(np.float64)
    out: FloatArray = sums / counts
    return out


def _rows(feats: FeatureSet, rows: IntArray | slice) -> FeatureSet:
    return FeatureSet(
        matrix=feats.matrix[rows],
        z=feats.z[rows],
        deviation=feats.deviation[rows],
        baseline=feats.baseline[rows],
        values=feats.values[rows],
        hour=feats.hour[rows],
    )


def _last_row(feats: FeatureSet) -> FeatureSet:
    return _rows(feats, slice(len(feats.z) - 1, None))
