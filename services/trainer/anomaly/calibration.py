"""Calibration of raw scores to [0, 1): the share of training scores below a value.

Usage: ``cal = Calibrator.fit(training_scores); calibrated = cal(scores)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.arrays import FloatArray


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
