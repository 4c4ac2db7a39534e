"""Predicted threshold breaches: when a forecast reaches a metric's threshold, and how likely it is.

Usage: `find_breach(metric, times, yhat, upper, threshold=85.0, interval_width=0.8, now=now)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

import numpy as np

from services.forecaster.forecasting.errors import ForecastError
from services.forecaster.forecasting.prediction import DEFAULT_INTERVAL_WIDTH, Prediction
from shared.arrays import FloatArray
from shared.catalogue import METRIC_NAMES, METRICS_BY_NAME
from shared.severity import Severity

# Breach incidents look this far ahead; stored forecasts reach a little further.
ALERT_HORIZON_HOURS = 24.0


@dataclass(frozen=True, slots=True)
class Breach:
    """A predicted upward crossing of a threshold within a forecast horizon.

    ``at`` is when yhat first reaches the threshold or, if only the upper bound does, when
    the upper bound first does. ``probability`` is P(value >= threshold) at ``at`` and
    ``peak_probability`` its maximum over the horizon. Severity: critical when yhat
    crosses within the hour, high when it crosses later, medium when only the bound does.
    """

    metric: str
    threshold: float
    yhat_crossing_at: datetime | None
    upper_crossing_at: datetime | None
    at: datetime
    predicted_value: float
    predicted_upper: float
    probability: float
    peak_probability: float
    severity: Severity

    def details(self) -> dict[str, Any]:
        """The JSON details of the incident it raises."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "threshold": self.threshold,
            "at": iso(self.at),
            "yhat_crossing_at": iso(self.yhat_crossing_at),
            "upper_crossing_at": iso(self.upper_crossing_at),
            "predicted_value": self.predicted_value,
            "predicted_upper": self.predicted_upper,
            "probability": self.probability,
            "peak_probability": self.peak_probability,
        }


def interval_width(parameters: Mapping[str, Any]) -> float:
    """The interval width a model version was fitted with, from its stored parameters."""
    return float(parameters.get("interval_width") or DEFAULT_INTERVAL_WIDTH)


def thresholds(overrides: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """Alert thresholds: the catalogue defaults, with overrides (None removes one)."""
    out = {m.name: m.threshold for m in METRICS_BY_NAME.values() if m.threshold is not None}
    for name, value in (overrides or {}).items():
        if name not in METRICS_BY_NAME:
            raise ForecastError(
                f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}"
            )
        if value is None:
            out.pop(name, None)
        else:
            out[name] = float(value)
    return out


def exceedance_probability(
    yhat: FloatArray, upper: FloatArray, threshold: float, interval_width: float
) -> FloatArray:
    """P(value >= threshold) per point, a normal with sigma = (upper - yhat) / z."""
    z = NormalDist().inv_cdf((1.0 + interval_width) / 2.0)
    sigma = (upper - yhat) / z
    out = np.where(yhat >= threshold, 1.0, 0.0)
    ok = sigma > 0
    if ok.any():
        cdf = np.vectorize(NormalDist().cdf, otypes=[float])
        out[ok] = 1.0 - cdf((threshold - yhat[ok]) / sigma[ok])
    return np.asarray(out, dtype=float)


def find_breach(
    metric: str,
    times: Sequence[datetime],
    yhat: FloatArray,
    upper: FloatArray,
    *,
    threshold: float,
    interval_width: float,
    now: datetime,
) -> Breach | None:
    """First upward crossing of `threshold` by yhat and by the upper bound; None if neither.

    Plain arrays in time order, no DataFrame: alerts answer in a few milliseconds.
    """
    if len(times) == 0:
        return None
    by_yhat = np.flatnonzero(yhat >= threshold)
    by_upper = np.flatnonzero(upper >= threshold)
    if by_yhat.size == 0 and by_upper.size == 0:
        return None
    i = int(by_yhat[0]) if by_yhat.size else int(by_upper[0])
    probability = exceedance_probability(yhat, upper, threshold, interval_width)
    at = times[i]
    severity: Severity
    if by_yhat.size:
        severity = "critical" if at - now <= timedelta(hours=1) else "high"
    else:
        severity = "medium"
    return Breach(
        metric=metric,
        threshold=threshold,
        yhat_crossing_at=times[int(by_yhat[0])] if by_yhat.size else None,
        upper_crossing_at=times[int(by_upper[0])] if by_upper.size else None,
        at=at,
        predicted_value=float(yhat[i]),
        predicted_upper=float(upper[i]),
        probability=float(probability[i]),
        peak_probability=float(probability.max()),
        severity=severity,
    )


def find_breaches(
    forecasts: Iterable[tuple[str, Prediction, float]],
    *,
    limits: Mapping[str, float],
    now: datetime,
) -> list[Breach]:
    """Every predicted breach of `(metric, prediction, interval_width)`s with a limit, soonest first."""
    found = [
        breach
        for metric, prediction, width in forecasts
        if metric in limits
        and (
            breach := find_breach(
                metric,
                prediction.times,
                prediction.yhat,
                prediction.upper,
                threshold=limits[metric],
                interval_width=width,
                now=now,
            )
        )
        is not None
    ]
    return sorted(found, key=lambda b: b.at)
