"""Which metrics made a score: each metric's share of the deviation, observed against expected.

Usage: ``contribution_dicts(det.contributions(feats, row, top_k=3))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.trainer.anomaly.features import FeatureExtractor, FeatureSet
from shared.arrays import FloatArray


@dataclass(frozen=True, slots=True)
class MetricContribution:
    metric: str
    observed: float
    expected: float
    share: float  # of the summed per-metric deviation over all metrics


def contributions(
    extractor: FeatureExtractor,
    feats: FeatureSet,
    row: int,
    *,
    dev_ref: FloatArray,
    z_ref: FloatArray,
    top_k: int = 3,
) -> list[MetricContribution]:
    """Top metrics of one row with observed and expected values and share of the score.

    Shares are each metric's deviation ratio (the larger of its level shift and its
    distance from the training median, each over its 99.9th training percentile) over
    the sum across all metrics. The expected value is the recent baseline when the level
    shift dominates, else the training median.
    """
    ratio_dev = np.abs(feats.deviation[row]) / dev_ref
    ratio_lvl = np.abs(feats.z[row]) / z_ref
    ratio = np.maximum(ratio_dev, ratio_lvl)
    total = float(ratio.sum())
    order = np.argsort(-ratio, kind="stable")[:top_k]
    fx = extractor
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


def contribution_dicts(items: Sequence[MetricContribution]) -> list[dict[str, Any]]:
    """Contributions as stored and answered, non-finite figures as 0."""
    return [
        {
            "metric": c.metric,
            "observed": _finite(c.observed),
            "expected": _finite(c.expected),
            "share": _finite(c.share),
        }
        for c in items
    ]


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else 0.0
