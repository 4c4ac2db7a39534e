"""A metric an hour from now against its current value: the forecast there, the change, the direction.

Usage: `next_hour(prediction, at=now + timedelta(hours=1), current_value=42.0, scale=100.0)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from services.forecaster.forecasting.prediction import Prediction
from services.forecaster.forecasting.trend import direction
from shared.schemas.forecast import Direction

# "flat" while |forecast - current| stays under this share of the metric's scale.
NEXT_HOUR_FLAT_TOLERANCE = 0.02


@dataclass(frozen=True, slots=True)
class NextHour:
    """The forecast at `at` and its change from the current value (None: no current value)."""

    at: datetime
    yhat: float
    yhat_lower: float
    yhat_upper: float
    change: float | None
    direction: Direction


def next_hour(
    prediction: Prediction,
    *,
    at: datetime,
    current_value: float | None,
    scale: float | None = None,
) -> NextHour:
    """The forecast interpolated at `at` against `current_value`.

    ``scale`` is the metric's typical magnitude (the model's y_scale); without it, the larger
    of |forecast| and |current value|. "flat" also when there is no current value.
    """
    seconds = np.array([t.timestamp() for t in prediction.times])
    target = at.timestamp()
    yhat, lower, upper = (
        float(np.interp(target, seconds, values))
        for values in (prediction.yhat, prediction.lower, prediction.upper)
    )
    change = None if current_value is None else yhat - current_value
    scale = scale or max(abs(yhat), abs(current_value or 0.0), 1e-9)
    return NextHour(
        at=at,
        yhat=yhat,
        yhat_lower=lower,
        yhat_upper=upper,
        change=change,
        direction=(
            "flat" if change is None else direction(change, NEXT_HOUR_FLAT_TOLERANCE * scale)
        ),
    )
