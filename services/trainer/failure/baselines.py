"""The three baselines failure prediction is measured against, each a per-row 'over' signal.

- ``trend_breach``: the forecaster's predicted breach, approximated by a linear trend: a
  metric's least-squares slope over the last 15 minutes, extrapolated from its current value,
  reaches its alert line within the horizon (the catalogue thresholds, as the forecaster's
  breach alerts use). Not the Prophet forecaster itself: that is fitted per metric and
  scored every few minutes, too slow for a month of rows in a benchmark.
- ``anomaly_over``: the streaming anomaly detector (``anomaly.streaming.HostStream``, defaults)
  with the host's likelihood at or over 0.999.
- ``persistence``: a condition's metric already at or over 80 % of its failure line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.trainer.anomaly.streaming import HostStream
from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.features import FeatureSpec
from shared.arrays import BoolArray, FloatArray
from shared.catalogue import METRICS_BY_NAME

PERSISTENCE_SHARE = 0.8
ANOMALY_LIKELIHOOD = 0.999


def catalogue_lines(metrics: Sequence[str]) -> dict[str, float]:
    """The alert line of each metric that has one in the catalogue."""
    out: dict[str, float] = {}
    for m in metrics:
        known = METRICS_BY_NAME.get(m)
        if known is not None and known.threshold is not None:
            out[m] = known.threshold
    return out


def definition_lines(definition: FailureDefinition) -> dict[str, float]:
    """The lowest failure line of each metric in the definition (a drop: its start level)."""
    out: dict[str, float] = {}
    for c in definition.conditions:
        out[c.metric] = min(out.get(c.metric, np.inf), c.watch_level)
    return out


def trend_breach(
    spec: FeatureSpec,
    features: FloatArray,
    values: FloatArray,
    lines: Mapping[str, float],
    *,
    horizon_min: float,
) -> BoolArray:
    """Rows whose 15-minute trend reaches a line within the horizon (or is over it already).

    ``values`` (n, len(spec.metrics)) are the samples; ``features`` their rows (the slope).
    """
    names = {n: j for j, n in enumerate(spec.names)}
    out = np.zeros(len(features), dtype=bool)
    for metric, line in lines.items():
        if metric not in spec.metrics:
            continue
        level = values[:, spec.metrics.index(metric)]
        slope = np.nan_to_num(features[:, names[f"{metric}:slope_15m"]])
        out |= level + np.maximum(slope, 0.0) * horizon_min >= line
    return out


def persistence(
    values: FloatArray, metrics: Sequence[str], lines: Mapping[str, float]
) -> BoolArray:
    """Rows where a metric is at or over 80 % of its line."""
    index = {m: i for i, m in enumerate(metrics)}
    out = np.zeros(len(values), dtype=bool)
    for metric, line in lines.items():
        if metric in index:
            out |= values[:, index[metric]] >= PERSISTENCE_SHARE * line
    return out


def anomaly_over(
    times: FloatArray, values: FloatArray, metrics: Sequence[str], *, likelihood: float = 0.999
) -> BoolArray:
    """Rows the streaming detector scores at or over ``likelihood`` (learning from the first)."""
    stream = HostStream(tuple(metrics))
    out = np.zeros(len(times), dtype=bool)
    rows = values.tolist()
    names = list(metrics)
    for i, ts in enumerate(np.asarray(times, dtype=np.float64).tolist()):
        reading = stream.update(ts, dict(zip(names, rows[i], strict=True)))
        out[i] = reading.score >= likelihood
    return out
