"""The features of a run of rows, as the anomaly detector consumes them.

Usage: ``feats = fx.transform(frame); feats.take(slice(-1, None)).matrix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.arrays import FloatArray, IntArray

GAP_STEPS = 2  # a step of more slots than this between two samples is a gap


def since_gap(slots: IntArray) -> FloatArray:
    """Per sample (time-ordered grid slots): slots since the newest sample that came after a
    gap, at or before it; inf where there was none. A gap is a step of more than
    ``GAP_STEPS`` slots, or of more than twice the usual (median) step when that is longer,
    so a host sending every 5 minutes has no gap between its samples."""
    n = len(slots)
    out = np.full(n, np.inf)
    if n < 2:
        return out
    steps = np.diff(slots)
    if int(steps.max()) <= GAP_STEPS:  # the usual case, and cheap: no step can be a gap
        return out
    limit = max(GAP_STEPS, 2 * int(np.median(steps)))
    after = np.flatnonzero(steps > limit) + 1
    if not len(after):
        return out
    idx = np.full(n, -1, dtype=np.int64)
    idx[after] = after
    np.maximum.accumulate(idx, out=idx)
    seen = idx >= 0
    out[seen] = (slots[seen] - slots[idx[seen]]).astype(np.float64)
    return out


@dataclass(slots=True)
class FeatureSet:
    """Features of a run of rows: the model matrix plus per-metric views used for scoring."""

    matrix: FloatArray  # (rows, features)
    z: FloatArray  # (rows, metrics) standardised value
    deviation: FloatArray  # (rows, metrics) current level minus recent baseline
    baseline: FloatArray  # (rows, metrics) recent baseline, standardised
    values: FloatArray  # (rows, metrics) observed values after filling
    hour: IntArray  # (rows,) UTC hour of each row (epoch seconds // 3600)
    # (rows,) rows before each one in its run: since the start of the rows computed, or
    # since the last gap longer than the look-back (0: the first row after such a gap)
    run_index: IntArray
    # (rows,) slots since the newest gap in the samples before each row (inf: none seen), a
    # gap being a step of more than ``GAP_STEPS`` slots (or twice the usual step, if longer)
    since_gap: FloatArray

    def __len__(self) -> int:
        return len(self.hour)

    @staticmethod
    def concat(sets: Sequence[FeatureSet]) -> FeatureSet:
        """The rows of several feature sets, in order."""
        return FeatureSet(
            matrix=np.concatenate([s.matrix for s in sets]),
            z=np.concatenate([s.z for s in sets]),
            deviation=np.concatenate([s.deviation for s in sets]),
            baseline=np.concatenate([s.baseline for s in sets]),
            values=np.concatenate([s.values for s in sets]),
            hour=np.concatenate([s.hour for s in sets]),
            run_index=np.concatenate([s.run_index for s in sets]),
            since_gap=np.concatenate([s.since_gap for s in sets]),
        )

    def take(self, rows: IntArray | slice) -> FeatureSet:
        """The same views of some rows: ``feats.take(slice(-1, None))``."""
        return FeatureSet(
            matrix=self.matrix[rows],
            z=self.z[rows],
            deviation=self.deviation[rows],
            baseline=self.baseline[rows],
            values=self.values[rows],
            hour=self.hour[rows],
            run_index=self.run_index[rows],
            since_gap=self.since_gap[rows],
        )
