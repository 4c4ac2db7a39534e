"""The correlation view of a host's forest: a metric leaving its usual relation to the others.

Usage: ``view = CorrelationView.fit(z_train, keep=0.99); raw = view.raw(z)`` (``z``: each
metric standardised by its training median and robust scale, ``FeatureSet.z``).

The training rows' principal components that hold ``keep`` of their variance span what the
host's metrics usually do together; a row's residual off that subspace, each residual
direction over its training variance (the Q statistic), is large when metrics that move
together part ways, even if each stays inside its own usual range (docs/anomaly-detection.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.arrays import FloatArray

DEFAULT_KEEP = 0.99  # share of the training variance the usual relations hold (bench/RESULTS.md)
# A residual direction's variance is never taken below this (in robust-scale units squared):
# an exact relation in training (memory in MB and in %) is not broken by rounding alone.
_MIN_VARIANCE = 1e-4


@dataclass(slots=True)
class CorrelationView:
    mean: FloatArray  # (metrics,) training mean of z
    basis: FloatArray  # (metrics, k) the usual relations, orthonormal
    residual_var: FloatArray  # (metrics,) training variance of the residual per metric

    @classmethod
    def fit(cls, z: FloatArray, *, keep: float = DEFAULT_KEEP) -> CorrelationView | None:
        """The view of training rows ``z``, or None when no relation leaves a residual (a
        single varying metric, or as many components as metrics)."""
        if not 0.0 < keep < 1.0:
            raise ValueError("keep must lie in (0, 1)")
        mean = z.mean(axis=0)
        centred = z - mean
        _u, s, vt = np.linalg.svd(centred, full_matrices=False)
        energy = s * s
        total = float(energy.sum())
        if total <= 0.0:
            return None
        k = int(np.searchsorted(np.cumsum(energy) / total, keep) + 1)
        if k >= z.shape[1]:
            return None
        basis = np.ascontiguousarray(vt[:k].T)
        residual = centred - (centred @ basis) @ basis.T
        var = np.maximum(residual.var(axis=0), _MIN_VARIANCE)
        return cls(mean=mean, basis=basis, residual_var=var)

    def raw(self, z: FloatArray) -> FloatArray:
        """Each row's mean squared residual off the usual relations, in training variances."""
        centred = z - self.mean
        residual = centred - (centred @ self.basis) @ self.basis.T
        out: FloatArray = (residual * residual / self.residual_var).mean(axis=1)
        return out
