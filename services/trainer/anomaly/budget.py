"""A host's forest threshold chosen from its own false-incident rate, not one constant for all.

Usage (in the training process)::

    stream = replay_stream(times, values, METRIC_NAMES)       # the per-metric layer's scores
    choice = choose_contamination(frame, metrics, stream, threshold=0.999, consecutive=3,
                                  budget=1.0, n_estimators=100)
    AnomalyDetector(contamination=choice.contamination).fit(frame, metrics)

A forest fitted on the first two thirds of the host's (unlabelled) history scores the last
third; on that third, the host's two layers joined as the scoring loop joins them (the
per-metric likelihood, the forest's score on the same scale or the two joined,
``hostscore.combine``, then ``consecutive`` in a row) open some number of incidents per day
at each contamination of ``GRID``. The largest contamination whose count fits the budget is the host's: a host whose
normal life is calm gets a lower forest threshold (more recall), a busy one a higher
(docs/anomaly-detection.md). Nothing here reads a label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import incident_rows, runs
from services.trainer.anomaly.features import frame_times
from services.trainer.anomaly.hostscore import combine_all
from services.trainer.anomaly.streaming import HostStream, StreamConfig
from shared.arrays import FloatArray

# Contaminations a host's forest may run at (the share of its own history it flags).
GRID = (0.001, 0.002, 0.003, 0.005, 0.007, 0.01)
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class BudgetChoice:
    contamination: float
    held_out_days: float
    incidents_per_day: dict[float, float]  # held-out incidents a day, per contamination

    def summary(self) -> dict[str, object]:
        """As stored with the model version (``parameters``)."""
        return {
            "contamination": self.contamination,
            "held_out_days": round(self.held_out_days, 3),
            "incidents_per_day": {str(c): round(v, 3) for c, v in self.incidents_per_day.items()},
        }


def replay_stream(
    times: FloatArray,
    values: FloatArray,
    metrics: Sequence[str],
    config: StreamConfig | None = None,
) -> FloatArray:
    """The per-metric layer's host score of each row, learning from the first (epoch seconds,
    values in ``metrics`` order, NaN = missing): what a new host's detectors would have said."""
    stream = HostStream(tuple(metrics), config or StreamConfig())
    names = tuple(metrics)
    out = np.zeros(len(times))
    for i, (t, row) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
        out[i] = stream.update(float(t), dict(zip(names, row, strict=True))).score
    return out


def held_out_incidents(
    stream: FloatArray, forest: FloatArray, forest_threshold: float, *, threshold: float, k: int
) -> int:
    """Incidents the joined layers open, scored as the scoring loop scores them
    (``hostscore.combine``)."""
    flags = combine_all(stream, forest, forest_threshold, threshold) >= threshold
    return len(runs(incident_rows(flags, k)))


def choose_contamination(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    stream: FloatArray,
    *,
    threshold: float,
    consecutive: int,
    budget: float,
    n_estimators: int = 100,
    grid: Sequence[float] = GRID,
) -> BudgetChoice:
    """The largest contamination of ``grid`` at which the held-out third of a time-ordered
    history opened at most ``budget`` incidents a day (the smallest if none does)."""
    if len(stream) != len(frame):
        raise ValueError("one stream score per history row is needed")
    cut = 2 * len(frame) // 3  # the first two thirds fit, the last third is scored
    if cut < 2 or cut >= len(frame):
        raise ValueError("the history is too short to hold a third out")
    times = frame_times(frame)
    days = max(float(times[-1] - times[cut - 1]) / _DAY, 1.0 / 1440.0)
    # a metric the host began to send in the last third is left to the final forest
    seen = [m for m in metrics if bool(frame[m].iloc[:cut].notna().any())]
    if not seen:
        return BudgetChoice(contamination=min(grid), held_out_days=days, incidents_per_day={})
    det = AnomalyDetector(contamination=min(grid), n_estimators=n_estimators)
    det.fit(frame.iloc[:cut], seen)
    forest = det.score_frame(frame).score
    fitted = forest[:cut]
    per_day: dict[float, float] = {}
    best = min(grid)
    for c in sorted(grid):
        f_thr = float(np.nanquantile(fitted, 1.0 - c))  # NaN: rows it abstains on
        n = held_out_incidents(
            stream[cut:], forest[cut:], f_thr, threshold=threshold, k=consecutive
        )
        per_day[c] = n / days
        if per_day[c] <= budget:
            best = c
    return BudgetChoice(contamination=best, held_out_days=days, incidents_per_day=per_day)
