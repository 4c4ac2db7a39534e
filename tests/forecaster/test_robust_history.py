"""Training leaves anomaly incidents and flagged samples out of fitting, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.config import DEFAULT_CONFIG
from services.forecaster.forecasting.prediction import forecast_grid
from services.forecaster.forecasting.prophet_model import load_model, predict_frame
from services.forecaster.forecasting.training import fit_metrics
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared import workers
from shared.schemas.forecast import TrainForecasterRequest
from shared.tables import anomaly_scores, incidents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")

CPU = "cpu_usage_percent"
HOST = "robust"
START = datetime(2025, 1, 6, tzinfo=UTC)
DAYS = 10


def samples() -> pd.DataFrame:
    """Every sample labelled normal; CPU a clean daily curve with two bursts on the last day."""
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(DAYS, start=START)
    frame["label"] = "normal"
    ts = pd.DatetimeIndex(frame["timestamp"])
    hours = np.asarray((ts - ts[0]) / pd.Timedelta(hours=1))
    frame[CPU] = 30.0 + 10.0 * np.sin(2 * np.pi * hours / 24.0)
    last_day = ts >= ts[-1].floor("1D")
    frame.loc[last_day & (ts.hour >= 10) & (ts.hour < 12), CPU] = 95.0  # inside an incident
    frame.loc[last_day & (ts.hour == 15) & (ts.minute < 15), CPU] = 95.0  # flagged samples
    return frame


async def test_incidents_and_flagged_samples_are_left_out_of_fitting(engine: AsyncEngine) -> None:
    frame = samples()
    ts = pd.DatetimeIndex(frame["timestamp"])
    day = ts[-1].floor("1D").to_pydatetime()
    async with engine.begin() as conn:
        await store_frame(conn, frame, host=HOST)
        await conn.execute(
            sa.insert(incidents).values(
                type="ML_ANOMALY",
                severity="high",
                status="resolved",
                host=HOST,
                dedup_key=f"ML_ANOMALY:{HOST}",
                title="burst",
                started_at=day + timedelta(hours=10),
                updated_at=day + timedelta(hours=12),
                resolved_at=day + timedelta(hours=12) - timedelta(minutes=1),
            )
        )
        flagged = ts[
            (ts >= day + timedelta(hours=15)) & (ts < day + timedelta(hours=15, minutes=15))
        ]
        await conn.execute(
            sa.insert(anomaly_scores),
            [
                dict(
                    timestamp=t.to_pydatetime(),
                    host=HOST,
                    score=0.99,
                    threshold=0.5,
                    is_anomaly=True,
                    severity="high",
                )
                for t in flagged
            ],
        )
        # Another host's incident covers the whole window and must not matter.
        await conn.execute(
            sa.insert(incidents).values(
                type="ML_ANOMALY",
                severity="high",
                status="open",
                host="elsewhere",
                dedup_key="ML_ANOMALY:elsewhere",
                title="not ours",
                started_at=START,
                updated_at=START,
            )
        )
    async with engine.connect() as conn:
        spans = await repo.flagged_spans(conn, host=HOST, start=START, end=ts[-1].to_pydatetime())
    assert len(spans) == 1 + len(flagged)

    request = TrainForecasterRequest(host=HOST, metrics=[CPU])
    grid = forecast_grid(ts[-1].to_pydatetime(), step=DEFAULT_CONFIG.step, hours=24)
    with workers.thread_pool(1, name="fit") as pool:
        run = await fit_metrics(engine, pool, request, config=DEFAULT_CONFIG, grid=grid)
    (fitted,) = run.fitted
    assert fitted.evaluation is not None
    # 8 buckets of the incident (10:00-12:00) and the one bucket of flagged samples.
    assert fitted.evaluation.as_dict()["excluded_points"] == 9
    model = load_model(fitted.fit.artifact, fitted.fit.sha256)
    tomorrow = pd.Timestamp(day + timedelta(days=1)).tz_localize(None)
    ds = pd.DatetimeIndex([tomorrow + pd.Timedelta(hours=h, minutes=7.5) for h in (10, 11, 15)])
    hours = np.asarray((ds - pd.Timestamp(START).tz_localize(None)) / pd.Timedelta(hours=1))
    expected = 30.0 + 10.0 * np.sin(2 * np.pi * hours / 24.0)
    predicted = predict_frame(model, ds)["yhat"].to_numpy()
    assert np.max(np.abs(predicted - expected)) < 5.0, (predicted, expected)
