"""A stored forecast as the reads use it: one host and metric's newest generation.

Usage: `series.prediction()` for the breach and next-hour code, which work on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from services.forecaster.forecasting.prediction import Prediction


@dataclass(slots=True)
class StoredForecast:
    """One host and metric's newest stored forecast generation, points soonest first."""

    host: str
    metric: str
    model_id: int | None
    model_version: int | None
    generated_at: datetime
    times: list[datetime]
    yhat: list[float]
    lower: list[float]
    upper: list[float]

    def prediction(self) -> Prediction:
        return Prediction(
            times=self.times,
            yhat=np.array(self.yhat, dtype=float),
            lower=np.array(self.lower, dtype=float),
            upper=np.array(self.upper, dtype=float),
        )
