"""The anomaly detector: Isolation Forest, level-shift, jump and correlation views, calibrated.

Usage: ``det = AnomalyDetector().fit(frame); det.score_frame(frame)``; one sample of a host:
``det.score_sample(values, timestamp=ts, history=det.seeded_history(times, rows), threshold=t)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import IsolationForest

from services.trainer.anomaly.calibration import Calibrator
from services.trainer.anomaly.correlation import DEFAULT_KEEP, CorrelationView
from services.trainer.anomaly.explain import MetricContribution, contributions
from services.trainer.anomaly.features import FeatureConfig, FeatureExtractor, FeatureSet
from services.trainer.anomaly.forest import FlatForest, ScoringThreads, forest_scores
from services.trainer.anomaly.history import (
    HISTORY_MARGIN,
    SHIFT_MEMORY_HOURS,
    SHIFT_MEMORY_RANK,
    RecentHistory,
    ShiftMemory,
    causal_mean,
    trailing_peak,
)
from services.trainer.anomaly.threshold import severity
from shared.arrays import BoolArray, FloatArray
from shared.severity import Severity


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
    is_anomaly: BoolArray
    forest_score: FloatArray  # scikit-learn score_samples of each row (higher = normal)
    features: FeatureSet


class _Fitted(NamedTuple):
    forest: IsolationForest
    flat: FlatForest
    cal_forest: Calibrator
    cal_dev: Calibrator
    cal_jump: Calibrator
    cal_final: Calibrator


@dataclass
class AnomalyDetector:
    """Isolation Forest on causal features, with calibrated 0..1 scores.

    ``threads`` share the rows of large batches (set where the detector is made or loaded).
    ``fitted_threshold`` is the threshold training chose; the one in force is the caller's.
    """

    contamination: float = 0.05
    n_estimators: int = 100
    max_samples: int = 256
    smoothing: int = 20
    random_state: int = 0
    # share of the training variance the correlation view's usual relations hold; 0: no view
    correlation: float = DEFAULT_KEEP
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    threads: ScoringThreads | None = field(default=None, repr=False, compare=False)
    extractor: FeatureExtractor = field(init=False)
    forest: IsolationForest | None = field(init=False, default=None)
    flat: FlatForest | None = field(init=False, default=None)
    mean: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    scale: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    dev_ref: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    z_ref: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    jump_ref: FloatArray = field(init=False, default_factory=lambda: np.zeros(0))
    cal_forest: Calibrator | None = field(init=False, default=None)
    cal_dev: Calibrator | None = field(init=False, default=None)
    cal_jump: Calibrator | None = field(init=False, default=None)
    cal_final: Calibrator | None = field(init=False, default=None)
    corr: CorrelationView | None = field(init=False, default=None)
    cal_corr: Calibrator | None = field(init=False, default=None)
    fitted_threshold: float = field(init=False, default=0.95)
    n_train: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0.0 < self.contamination <= 0.5:
            raise ValueError("contamination must lie in (0, 0.5]")
        if not 0.0 <= self.correlation < 1.0:
            raise ValueError("correlation must lie in [0, 1)")
        if self.n_estimators < 1 or self.smoothing < 1:
            raise ValueError("n_estimators and smoothing must be at least 1")
        self.extractor = FeatureExtractor(self.feature_config)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.extractor.metrics

    @property
    def training_medians(self) -> dict[str, float]:
        return self.extractor.training_medians

    # -- training ------------------------------------------------------------------

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
        kept = mask & self.whole(feats.since_gap)  # rows it abstains on teach it nothing
        mask = kept if kept.sum() >= 2 else mask
        x = feats.matrix
        self.mean = x[mask].mean(axis=0)
        std = x[mask].std(axis=0)
        self.scale = np.where(std > 1e-12, std, 1.0)
        xs = self.standardise(x)
        self.forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, int(mask.sum())),
            random_state=self.random_state,
        ).fit(xs[mask])
        self.flat = FlatForest.from_forest(self.forest)
        forest_anom = causal_mean(-self.forest.score_samples(xs), self.smoothing, feats.run_index)[
            mask
        ]
        self.dev_ref = np.maximum(np.quantile(np.abs(feats.deviation)[mask], 0.999, axis=0), 1.0)
        self.z_ref = np.maximum(np.quantile(np.abs(feats.z[mask]), 0.999, axis=0), 1.0)
        # The memory sees every row, as it would in service (labelled anomalies included).
        dev_score = self._shift_score(feats, self._batch_memory_ref(feats))[mask]
        jumps = np.abs(feats.z - feats.baseline)[mask]
        self.jump_ref = np.maximum(np.quantile(jumps, 0.999, axis=0), 1.0)
        jump_anom = (jumps / self.jump_ref).max(axis=1)  # ``_jump_score`` of the masked rows
        self.cal_forest = Calibrator.fit(forest_anom)
        self.cal_dev = Calibrator.fit(dev_score)
        self.cal_jump = Calibrator.fit(jump_anom)
        combined = np.maximum(self.cal_forest(forest_anom), self.cal_dev(dev_score))
        combined = np.maximum(combined, self.cal_jump(jump_anom))
        self.corr, self.cal_corr = None, None
        if self.correlation > 0.0:
            self.corr = CorrelationView.fit(feats.z[mask], keep=self.correlation)
        if self.corr is not None:
            corr_raw = self.corr.raw(feats.z[mask])
            self.cal_corr = Calibrator.fit(corr_raw)
            combined = np.maximum(combined, self.cal_corr(corr_raw))
        self.cal_final = Calibrator.fit(combined)
        final = self.cal_final(combined)
        self.fitted_threshold = float(np.quantile(final, 1.0 - self.contamination))
        self.n_train = int(mask.sum())
        return self

    # -- scoring -------------------------------------------------------------------

    def standardise(self, x: FloatArray) -> FloatArray:
        """Feature rows as the forest was fitted on them."""
        out: FloatArray = (x - self.mean) / self.scale
        return out

    def fitted(self) -> _Fitted:
        """The fitted parts; raises if the detector is not trained."""
        if (
            self.forest is None
            or self.flat is None
            or self.cal_forest is None
            or self.cal_dev is None
            or self.cal_jump is None
            or self.cal_final is None
        ):
            raise RuntimeError("the detector is not trained")
        return _Fitted(
            self.forest, self.flat, self.cal_forest, self.cal_dev, self.cal_jump, self.cal_final
        )

    def forest_scores(self, features: FloatArray) -> FloatArray:
        """scikit-learn-equal ``score_samples`` of feature rows."""
        fitted = self.fitted()
        return forest_scores(fitted.forest, fitted.flat, self.standardise(features), self.threads)

    def _shift_score(self, feats: FeatureSet, memory_ref: FloatArray) -> FloatArray:
        """Largest per-metric level shift of each row relative to its reference."""
        out: FloatArray = (np.abs(feats.deviation) / np.maximum(self.dev_ref, memory_ref)).max(
            axis=1
        )
        return out

    def _jump_score(self, feats: FeatureSet) -> FloatArray:
        """Largest per-metric jump of each row: the sample itself against the previous
        hour's mean, relative to that metric's 99.9th training percentile."""
        out: FloatArray = (np.abs(feats.z - feats.baseline) / self.jump_ref).max(axis=1)
        return out

    def _batch_memory_ref(self, feats: FeatureSet) -> FloatArray:
        """Shift-memory reference of every row of a batch that starts with an empty memory."""
        return trailing_peak(
            feats.hour, np.abs(feats.deviation), window=SHIFT_MEMORY_HOURS, rank=SHIFT_MEMORY_RANK
        )

    def _combine(
        self, feats: FeatureSet, forest_anom: FloatArray, memory_ref: FloatArray
    ) -> FloatArray:
        fitted = self.fitted()
        dev_score = self._shift_score(feats, memory_ref)
        combined = np.maximum(fitted.cal_forest(forest_anom), fitted.cal_dev(dev_score))
        combined = np.maximum(combined, fitted.cal_jump(self._jump_score(feats)))
        if self.corr is not None and self.cal_corr is not None:
            combined = np.maximum(combined, self.cal_corr(self.corr.raw(feats.z)))
        return fitted.cal_final(combined)

    def score_features(
        self,
        feats: FeatureSet,
        *,
        threshold: float,
        memory: ShiftMemory | None = None,
        start: int = 0,
    ) -> BatchScores:
        """Score consecutive rows of one host (smoothing runs along the rows).

        With a host's ``memory``: rows from ``start`` on are new (not in the memory yet; the
        earlier rows are look-back only and their scores are not meaningful). Their shifts
        are measured against the memory and then folded into it.
        """
        forest = self.forest_scores(feats.matrix)
        if memory is not None:
            # Rows before ``start`` are look-back only: their reference is not worth computing.
            ref = np.zeros_like(feats.deviation)
            shift = np.abs(feats.deviation[start:])
            ref[start:] = memory.reference(feats.hour[start:], shift, SHIFT_MEMORY_RANK)
            memory.fold(feats.hour[start:], shift)
        else:
            ref = self._batch_memory_ref(feats)
        score = self._combine(feats, causal_mean(-forest, self.smoothing, feats.run_index), ref)
        score = np.where(self.whole(feats.since_gap), score, np.nan)
        return BatchScores(
            score=score, is_anomaly=score >= threshold, forest_score=forest, features=feats
        )

    def whole(self, since_gap: FloatArray) -> npt.NDArray[np.bool_]:
        """Rows with no gap in their look-back and smoothing; on others the forest abstains."""
        return np.asarray(since_gap >= self.extractor.config.lookback + self.smoothing)

    def score_frame(self, frame: pd.DataFrame, *, threshold: float | None = None) -> BatchScores:
        """Score every row of a time-ordered frame of one host (threshold: the fitted one)."""
        limit = self.fitted_threshold if threshold is None else threshold
        return self.score_features(self.extractor.transform(frame), threshold=limit)

    # -- one host, one sample at a time ----------------------------------------------

    @property
    def history_samples(self) -> int:
        """Samples of a host's past that a new history wants: its feature look-back and the
        day its shift memory covers (``seeded_history``)."""
        cfg = self.extractor.config
        memory = int(np.ceil((SHIFT_MEMORY_HOURS + 1) * 3600.0 / cfg.interval_s))
        return cfg.lookback + self.smoothing + HISTORY_MARGIN + memory

    def new_history(self) -> RecentHistory:
        """An empty per-host buffer of recent samples for ``score_sample``."""
        capacity = self.extractor.config.lookback + self.smoothing + HISTORY_MARGIN
        return RecentHistory(self.extractor, capacity=capacity)

    def seeded_history(self, times: FloatArray, values: FloatArray) -> RecentHistory:
        """A history filled from a host's past samples (epoch seconds, values in ``metrics``
        order, NaN = missing), the last ``history_samples`` of them counting, as if each
        had been scored: their shifts folded into its memory, their raw scores cached."""
        history = self.new_history()
        if len(times) == 0:
            return history
        order = np.argsort(times, kind="stable")[-self.history_samples :]
        times, values = times[order], values[order]
        feats = self.extractor.transform_arrays(times, values)
        history.memory.fold(feats.hour, np.abs(feats.deviation))
        first = max(0, len(times) - history.capacity)
        for t, row in zip(times[first:], values[first:], strict=True):
            history.append_array(row, float(t))
        history.scores()[:] = -self.forest_scores(feats.matrix[first:])
        history.unfolded = 0
        return history

    def score_sample(
        self,
        sample: Mapping[str, float],
        *,
        timestamp: datetime | pd.Timestamp | str | float,
        history: RecentHistory,
        threshold: float,
        top_k: int = 3,
    ) -> AnomalyResult:
        """Score one new sample of a host; appends it to that host's ``history``."""
        history.append(sample, timestamp)
        # The last ``smoothing`` raw forest scores: only rows never scored need the forest.
        cached = history.scores()[-self.smoothing :]
        unknown = np.flatnonzero(np.isnan(cached))
        need = len(cached) - int(unknown[0]) if len(unknown) else 1
        rows = min(max(need, history.unfolded), len(history))
        feats = history.features(rows=rows)
        fresh = self.forest_scores(feats.matrix[-need:])
        cached[len(cached) - need :] = -fresh
        # The last row of ``causal_mean`` (the same sum) over the rows since a long gap.
        in_run = cached[-history.run_length(len(cached)) :]
        forest_anom = np.array([sum(in_run.tolist()) / len(in_run)])
        n = len(feats)
        last = feats.take(slice(n - 1, None))
        new = feats.take(slice(n - history.unfolded, None))
        shift = np.abs(new.deviation)
        ref = history.memory.reference(new.hour, shift, SHIFT_MEMORY_RANK)[-1:]
        history.memory.fold(new.hour, shift)
        history.unfolded = 0
        whole = bool(self.whole(last.since_gap)[0])
        score = float(self._combine(last, forest_anom, ref)[0]) if whole else np.nan
        return AnomalyResult(
            score=score,
            is_anomaly=score >= threshold,
            severity=severity(score),
            threshold=threshold,
            contributions=self.contributions(last, 0, top_k=top_k),
        )

    def settle(self, history: RecentHistory, *, at: float | None = None) -> None:
        """Do once, on a host's own history, the work ``score_sample`` would otherwise redo on
        every copy of it: fold its unfolded rows into its shift memory, cache their raw
        forest scores and, given the time ``at`` of the next sample, that hour's shift
        reference. Changes no later answer (the same rows, features and sums)."""
        if len(history) == 0:
            return
        cached = history.scores()[-self.smoothing :]
        unknown = np.flatnonzero(np.isnan(cached))
        need = len(cached) - int(unknown[0]) if len(unknown) else 0
        if need or history.unfolded:
            feats = history.features(rows=min(max(need, history.unfolded), len(history)))
            if need:
                cached[len(cached) - need :] = -self.forest_scores(feats.matrix[-need:])
            new = feats.take(slice(len(feats) - history.unfolded, None))
            history.memory.fold(new.hour, np.abs(new.deviation))
            history.unfolded = 0
        if at is not None:
            hour = np.array([int(np.floor(at / 3600.0))], dtype=np.int64)
            if not len(history.memory.hours) or hour[0] >= history.memory.hours[-1]:
                history.memory.reference(hour, np.zeros((1, len(self.metrics))), SHIFT_MEMORY_RANK)

    def score_new(
        self, history: RecentHistory, times: FloatArray, values: FloatArray, *, threshold: float
    ) -> BatchScores:
        """Score a host's new samples (time-ordered, after its ``history``) as ``score_sample``
        would one by one, and append them to it; the result holds the new rows only."""
        h_times, h_values = history.arrays()
        k = len(h_times)
        feats = self.extractor.transform_arrays(
            np.concatenate([h_times, times]), np.vstack([h_values, values])
        )
        # Rows buffered but never folded into the memory (none in the scoring loop's own
        # histories) are scored as new too.
        batch = self.score_features(
            feats, threshold=threshold, memory=history.memory, start=k - history.unfolded
        )
        for t, row in zip(times, values, strict=True):
            history.append_array(row, float(t))
        history.unfolded = 0
        history.scores()[-len(times) :] = -batch.forest_score[k:][-history.capacity :]
        new = slice(k, None)
        return BatchScores(
            score=batch.score[new],
            is_anomaly=batch.is_anomaly[new],
            forest_score=batch.forest_score[new],
            features=feats.take(new),
        )

    # -- explanation ---------------------------------------------------------------

    def contributions(
        self, feats: FeatureSet, row: int, *, top_k: int = 3
    ) -> list[MetricContribution]:
        """Top metrics of one row with observed and expected values and share of the score."""
        return contributions(
            self.extractor, feats, row, dev_ref=self.dev_ref, z_ref=self.z_ref, top_k=top_k
        )
