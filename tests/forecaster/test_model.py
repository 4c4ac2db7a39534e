"""The forecasting domain module: fit, forecast, evaluate, serialise, trend, breaches."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from services.forecaster.model import (
    DEFAULT_CONFIG,
    ForecastError,
    InsufficientHistoryError,
    MetricModel,
    ModelIntegrityError,
    analyse_trend,
    detect_breach,
    detect_breaches,
    evaluate,
    fit_metric,
    fit_models,
    forecast,
    load_model,
    next_hour,
    resample_history,
    serialize_model,
    thresholds,
)

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3 deprecates
# (Pandas4Warning, a DeprecationWarning raised from prophet.forecaster). Not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")

START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
QUALITY_METRICS = ("cpu_usage_percent", "memory_usage_percent", "response_time_p95")


def daily_series(
    days: int = 21, *, slope_per_day: float = 0.0, noise: float = 0.5, freq: str = "5min"
) -> pd.DataFrame:
    """A metric with a known daily sine (peak 15:00 UTC), a linear trend and white noise."""
    ts = pd.date_range(START, periods=int(pd.Timedelta(days=days) / pd.Timedelta(freq)), freq=freq)
    hours = (ts - ts[0]) / pd.Timedelta(hours=1)
    rng = np.random.default_rng(7)
    y = (
        50.0
        + slope_per_day * hours / 24.0
        + 10.0 * np.sin(2 * np.pi * (np.asarray(hours) % 24 - 9.0) / 24.0)
        + noise * rng.standard_normal(len(ts))
    )
    return pd.DataFrame({"timestamp": ts, "cpu_usage_percent": y})


def truth(ts: pd.Series, *, slope_per_day: float) -> np.ndarray:
    hours = np.asarray((pd.DatetimeIndex(ts) - START) / pd.Timedelta(hours=1))
    return (
        50.0 + slope_per_day * hours / 24.0 + 10.0 * np.sin(2 * np.pi * (hours % 24 - 9.0) / 24.0)
    )


@pytest.fixture(scope="module")
def rising_model() -> MetricModel:
    return fit_metric(daily_series(slope_per_day=1.0), "cpu_usage_percent")


@pytest.fixture(scope="module")
def flat_model() -> MetricModel:
    return fit_metric(daily_series(slope_per_day=0.0), "cpu_usage_percent")


def test_resample_drops_gaps_and_uses_bucket_middles() -> None:
    frame = daily_series(days=1, freq="1min")
    gap = (frame["timestamp"] >= START + timedelta(hours=3)) & (
        frame["timestamp"] < START + timedelta(hours=5)
    )
    resampled = resample_history(frame[~gap], "cpu_usage_percent", resolution="15min")
    assert len(resampled) == 96 - 8  # two hours of 15-minute buckets missing
    assert resampled["ds"].iloc[0] == pd.Timestamp("2025-01-06 00:07:30")
    assert resampled["ds"].dt.tz is None  # Prophet wants naive UTC
    first = frame["cpu_usage_percent"].iloc[:15].mean()
    assert resampled["y"].iloc[0] == pytest.approx(first)


def test_resample_converts_other_timezones_to_utc() -> None:
    ts = pd.date_range("2025-01-06 01:00", periods=60, freq="1min", tz="Europe/Berlin")
    series = pd.Series(np.arange(60.0), index=ts)
    resampled = resample_history(series, resolution="1h")
    assert resampled["ds"].tolist() == [pd.Timestamp("2025-01-06 00:30")]


def test_resample_masks_labelled_anomalies_only_when_asked() -> None:
    frame = daily_series(days=1, freq="1min").assign(label="normal")
    frame.loc[:29, "label"] = "cpu_spike"
    frame.loc[:29, "cpu_usage_percent"] = 1000.0
    clean = resample_history(frame, "cpu_usage_percent", resolution="1h")
    raw = resample_history(
        frame, "cpu_usage_percent", resolution="1h", exclude_labelled_anomalies=False
    )
    assert clean["y"].iloc[0] < 100.0 < raw["y"].iloc[0]


def test_forecast_follows_daily_pattern_and_trend(rising_model: MetricModel) -> None:
    frame = forecast(rising_model, hours_ahead=24)
    assert len(frame) == 96
    assert frame["timestamp"].dt.tz is not None
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2025-01-27 00:00", tz="UTC")
    error = np.abs(frame["yhat"].to_numpy() - truth(frame["timestamp"], slope_per_day=1.0))
    assert error.mean() < 0.6
    assert (frame["yhat_lower"] <= frame["yhat"]).all()
    assert (frame["yhat"] <= frame["yhat_upper"]).all()


def test_forecast_at_a_finer_step_and_from_a_given_start(flat_model: MetricModel) -> None:
    start = datetime(2025, 1, 27, 12, 2, tzinfo=UTC)
    frame = forecast(flat_model, hours_ahead=1, step="5min", start=start)
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2025-01-27 12:05", tz="UTC")
    assert len(frame) == 12


@pytest.mark.parametrize("hours", [0, -1, 24.5])
def test_forecast_rejects_horizons_outside_the_day(flat_model: MetricModel, hours: float) -> None:
    with pytest.raises(ForecastError):
        forecast(flat_model, hours_ahead=hours)


def test_too_little_history_is_refused() -> None:
    with pytest.raises(InsufficientHistoryError):
        fit_metric(daily_series(days=1, freq="1h"), "cpu_usage_percent")


def test_trend_of_a_rising_series(rising_model: MetricModel) -> None:
    trend = analyse_trend(rising_model, window_hours=24)
    assert trend.direction == "rising"
    assert trend.slope_per_day == pytest.approx(1.0, abs=0.25)
    assert trend.slope_per_hour == pytest.approx(trend.slope_per_day / 24)


def test_trend_of_a_flat_series(flat_model: MetricModel) -> None:
    assert analyse_trend(flat_model).direction == "flat"


def test_trend_change_points_find_a_kink() -> None:
    frame = daily_series(slope_per_day=0.0, noise=0.3)
    hours = (frame["timestamp"] - START) / pd.Timedelta(hours=1)
    kink = 10 * 24.0
    frame["cpu_usage_percent"] += np.where(hours > kink, (hours - kink) / 24.0 * 3.0, 0.0)
    trend = analyse_trend(fit_metric(frame, "cpu_usage_percent"))
    assert trend.direction == "rising"
    biggest = max(trend.change_points, key=lambda c: c.slope_change_per_day)
    assert abs(biggest.time - (START + timedelta(hours=kink))) <= timedelta(days=2)
    assert 0 < biggest.slope_change_per_day
    assert sum(c.slope_change_per_day for c in trend.change_points) == pytest.approx(3.0, abs=0.6)


def hand_built(values: list[float], spread: float = 5.0) -> pd.DataFrame:
    ts = pd.date_range("2025-02-01", periods=len(values), freq="15min", tz="UTC")
    y = np.asarray(values)
    return pd.DataFrame(
        {"timestamp": ts, "yhat": y, "yhat_lower": y - spread, "yhat_upper": y + spread}
    )


def test_breach_times_for_yhat_and_upper_bound() -> None:
    frame = hand_built([70, 75, 78, 81, 84, 86, 90])
    breach = detect_breach(frame, threshold=85.0, metric="cpu_usage_percent")
    assert breach is not None
    assert breach.upper_crossing_at == datetime(2025, 2, 1, 0, 45, tzinfo=UTC)  # 81 + 5
    assert breach.yhat_crossing_at == datetime(2025, 2, 1, 1, 15, tzinfo=UTC)  # 86
    assert breach.at == breach.yhat_crossing_at
    assert breach.predicted_value == 86.0
    assert 0.5 < breach.probability < 1.0
    assert breach.peak_probability > breach.probability


def test_breach_by_the_upper_bound_only() -> None:
    breach = detect_breach(hand_built([70, 80, 82, 79]), threshold=85.0)
    assert breach is not None
    assert breach.yhat_crossing_at is None
    assert breach.at == breach.upper_crossing_at == datetime(2025, 2, 1, 0, 15, tzinfo=UTC)
    assert breach.predicted_value == 80.0
    # upper = yhat + 1.28 sigma at 80 %: yhat 5 below a threshold at the upper bound's level.
    assert breach.probability == pytest.approx(0.10, abs=0.001)


def test_no_breach_below_the_threshold() -> None:
    assert detect_breach(hand_built([10, 20, 30]), threshold=85.0) is None


def test_breaches_use_catalogue_thresholds_with_overrides() -> None:
    assert thresholds()["cpu_usage_percent"] == 85.0
    frames = {"cpu_usage_percent": hand_built([50, 60]), "memory_usage_percent": hand_built([95])}
    found = detect_breaches(frames, threshold_overrides={"cpu_usage_percent": 55.0})
    assert [b.metric for b in found] == ["memory_usage_percent", "cpu_usage_percent"]
    with pytest.raises(ForecastError, match="known metrics"):
        thresholds({"cpu": 1.0})


def test_json_roundtrip_gives_identical_forecasts(flat_model: MetricModel) -> None:
    stored = serialize_model(flat_model)
    assert "prophet" in stored.payload and len(stored.sha256) == 64
    loaded = load_model(stored.payload, stored.sha256)
    assert loaded.metric == flat_model.metric and loaded.config == flat_model.config
    assert loaded.trained_end == flat_model.trained_end
    pd.testing.assert_frame_equal(forecast(loaded), forecast(flat_model))


def test_checksum_mismatch_raises(flat_model: MetricModel) -> None:
    stored = serialize_model(flat_model)
    tampered = stored.payload.replace('"n_points":', '"n_points": ', 1)
    with pytest.raises(ModelIntegrityError):
        load_model(tampered, stored.sha256)
    with pytest.raises(ModelIntegrityError):
        load_model(stored.payload, "0" * 64)


def test_next_hour_direction(rising_model: MetricModel) -> None:
    now = datetime(2025, 1, 27, 9, 0, tzinfo=UTC)  # the sine rises fastest at 09:00
    result = next_hour(rising_model, current_value=50.0 + 20.0, now=now)
    assert result.at == now + timedelta(hours=1)
    assert result.yhat == pytest.approx(50 + 21 + 10 * np.sin(2 * np.pi / 24), abs=1.0)
    assert result.direction == "rising"
    assert next_hour(rising_model, current_value=90.0, now=now).direction == "falling"


def test_fit_models_in_parallel_reports_failures() -> None:
    frame = daily_series(days=14, freq="15min")
    frame["memory_usage_percent"] = frame["cpu_usage_percent"] / 2
    frame["disk_usage_percent"] = np.nan
    result = fit_models(frame)
    assert sorted(result.models) == ["cpu_usage_percent", "memory_usage_percent"]
    assert "disk_usage_percent" in result.failures


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    generator = pytest.importorskip("services.trainer.synthetic")
    frame: pd.DataFrame = generator.SyntheticDataGenerator(seed=42).generate_full_training_set(
        30, start=START
    )
    return frame


def test_quality_target_on_synthetic_data(synthetic: pd.DataFrame) -> None:
    """Last day held out, every held-out point scored (anomalous ones included)."""
    results = evaluate(synthetic, QUALITY_METRICS, config=DEFAULT_CONFIG)
    for name in QUALITY_METRICS:
        e = results[name]
        assert e.n_points == 96
        assert e.best_naive_mae is not None
        assert e.mae < e.best_naive_mae, (name, e.mae, e.naive_day_mae, e.naive_week_mae)
        assert 0.70 <= e.coverage <= 0.90, (name, e.coverage)


def test_fitting_at_an_hour_is_supported(synthetic: pd.DataFrame) -> None:
    model = fit_metric(
        synthetic, "cpu_usage_percent", config=replace(DEFAULT_CONFIG, resolution="1h")
    )
    # Hours made only of labelled anomalies are left out of the fit.
    assert 0.9 * 30 * 24 < model.n_points <= 30 * 24
    assert len(forecast(model, hours_ahead=6)) == 6
