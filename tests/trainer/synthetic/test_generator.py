"""The synthetic generator: columns, label shares, scenario shapes, determinism, value bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from services.trainer.synthetic.generator import (
    TOTAL_MEMORY_MB,
    SyntheticDataGenerator,
    label_distribution,
)
from shared.catalogue import DERIVED_METRICS, LABELS, METRIC_NAMES, METRICS

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
SHARES = {"normal": 0.85, "cpu_spike": 0.075, "memory_leak": 0.04, "error_storm": 0.035}
PERCENT_METRICS = [m.name for m in METRICS if m.is_percent]


@pytest.fixture(scope="module")
def month() -> pd.DataFrame:
    return SyntheticDataGenerator(seed=42).generate_full_training_set(30, start=START)


def segments(df: pd.DataFrame, label: str) -> list[pd.DataFrame]:
    """The runs of consecutive rows carrying `label`."""
    labels = df["label"].to_numpy()
    run_id = np.cumsum(np.r_[True, labels[1:] != labels[:-1]])
    return [df[run_id == i] for i in np.unique(run_id[labels == label])]


def test_columns_are_timestamp_metrics_label(month: pd.DataFrame) -> None:
    assert list(month.columns) == ["timestamp", *METRIC_NAMES, "label"]


def test_thirty_days_are_43200_minutes_from_start(month: pd.DataFrame) -> None:
    assert len(month) == 43_200
    assert month["timestamp"].iloc[0] == pd.Timestamp(START)
    assert str(month["timestamp"].dt.tz) == "UTC"
    assert (month["timestamp"].diff().iloc[1:] == pd.Timedelta(minutes=1)).all()


def test_default_start_makes_the_data_end_now() -> None:
    df = SyntheticDataGenerator(seed=1).generate_full_training_set(1)
    now = datetime.now(UTC)
    assert len(df) == 1440
    assert now - timedelta(minutes=2) <= df["timestamp"].iloc[-1].to_pydatetime() <= now


def test_days_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        SyntheticDataGenerator().generate_full_training_set(0)


@pytest.mark.parametrize("seed", [1, 42, 2024])
def test_label_shares_are_within_one_point_for_thirty_days(seed: int) -> None:
    df = SyntheticDataGenerator(seed=seed).generate_full_training_set(30, start=START)
    counts = label_distribution(df)
    for label, share in SHARES.items():
        assert abs(counts[label] / len(df) - share) < 0.01, (label, counts)


def test_one_day_still_has_every_scenario() -> None:
    df = SyntheticDataGenerator(seed=3).generate_full_training_set(1, start=START)
    assert all(count > 0 for count in label_distribution(df).values())


def test_label_distribution_lists_every_label(month: pd.DataFrame) -> None:
    counts = label_distribution(month)
    assert list(counts) == list(LABELS)
    assert sum(counts.values()) == len(month)


def test_same_seed_gives_identical_data(month: pd.DataFrame) -> None:
    again = SyntheticDataGenerator(seed=42).generate_full_training_set(30, start=START)
    pd.testing.assert_frame_equal(month, again)


def test_different_seed_gives_different_data(month: pd.DataFrame) -> None:
    other = SyntheticDataGenerator(seed=43).generate_full_training_set(30, start=START)
    assert not np.allclose(month["cpu_usage_percent"], other["cpu_usage_percent"])
    assert not (month["label"] == other["label"]).all()


def test_events_are_separated_by_an_hour_of_normal_operation(month: pd.DataFrame) -> None:
    abnormal = (month["label"] != "normal").to_numpy().astype(np.int8)
    edges = np.diff(abnormal)
    starts, ends = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1) + 1
    assert abnormal[0] == 0 and abnormal[-1] == 0
    assert (starts[1:] - ends[:-1]).min() >= 60


def test_cpu_spike_builds_up_peaks_at_85_to_95_and_drops_to_35(month: pd.DataFrame) -> None:
    spikes = segments(month, "cpu_spike")
    assert 35 <= len(spikes) <= 50
    for spike in spikes:
        cpu = spike["cpu_usage_percent"].to_numpy()
        assert 72 <= len(cpu) <= 77
        assert cpu[0] < 55, "the buildup starts from the normal level"
        assert 85 <= cpu.max() <= 95
        assert abs(cpu[-1] - 35) < 5
        assert cpu[-2] - cpu[-3] < -25, "remediation is a sudden drop"
        assert spike["response_time_p95"].max() > 2 * spike["response_time_p95"].iloc[0]


def test_memory_leak_grows_from_30_to_90_then_drops(month: pd.DataFrame) -> None:
    leaks = segments(month, "memory_leak")
    assert 8 <= len(leaks) <= 12
    for leak in leaks:
        memory = leak["memory_usage_percent"].to_numpy()
        assert 121 <= len(memory) <= 241
        growth = memory[:-1]
        assert growth[0] < 40
        assert growth[-1] >= 88
        assert (np.diff(growth[::10]) > 0).all(), "growth is monotone beyond the noise"
        assert memory[-1] < 40, "the restart frees the leaked memory"


def test_error_storm_jumps_to_a_quarter_with_latency_and_recovers(
    month: pd.DataFrame,
) -> None:
    normal = month[month["label"] == "normal"]
    normal_p95 = normal["response_time_p95"].median()
    storms = segments(month, "error_storm")
    assert 50 <= len(storms) <= 80
    for storm in storms:
        errors = storm["error_rate"].to_numpy()
        assert 20 <= len(errors) <= 25
        assert errors[0] > 0.15, "the storm starts suddenly"
        assert 0.19 <= errors[:5].mean() <= 0.31
        assert errors.max() <= 0.35
        assert errors[-1] < errors.max() / 4
        assert storm["response_time_p95"].iloc[0] > 3 * normal_p95


def test_normal_operation_stays_in_its_band(month: pd.DataFrame) -> None:
    normal = month[month["label"] == "normal"]
    assert normal["cpu_usage_percent"].max() < 60
    assert normal["memory_usage_percent"].between(25, 45).all()
    assert normal["error_rate"].max() < 0.03
    weekday_noon = normal[
        (normal["timestamp"].dt.hour == 12) & (normal["timestamp"].dt.day_of_week < 5)
    ]
    weekend_noon = normal[
        (normal["timestamp"].dt.hour == 12) & (normal["timestamp"].dt.day_of_week >= 5)
    ]
    night = normal[normal["timestamp"].dt.hour == 3]
    assert weekday_noon["cpu_usage_percent"].mean() > weekend_noon["cpu_usage_percent"].mean()
    assert weekend_noon["cpu_usage_percent"].mean() > night["cpu_usage_percent"].mean()


def test_response_time_percentiles_are_ordered(month: pd.DataFrame) -> None:
    assert (month["response_time_p50"] < month["response_time_p95"]).all()
    assert (month["response_time_p95"] < month["response_time_p99"]).all()


def test_values_are_finite_bounded_and_in_their_units(month: pd.DataFrame) -> None:
    metrics = month[list(METRIC_NAMES)]
    assert not metrics.isna().any().any()
    assert np.isfinite(metrics.to_numpy()).all()
    assert month[PERCENT_METRICS].ge(0).all().all() and month[PERCENT_METRICS].le(100).all().all()
    assert (metrics.drop(columns=list(DERIVED_METRICS)) >= 0).all().all()
    assert (month["active_requests"] == month["active_requests"].round()).all()
    np.testing.assert_allclose(
        month["memory_usage_mb"], month["memory_usage_percent"] / 100 * TOTAL_MEMORY_MB
    )
    assert (
        month["disk_usage_percent"].iloc[-1440:].mean()
        > month["disk_usage_percent"].iloc[:1440].mean()
    )


@pytest.mark.parametrize(
    ("derived", "source"),
    [
        ("cpu_rate_of_change", "cpu_usage_percent"),
        ("memory_rate_of_change", "memory_usage_percent"),
        ("error_rate_trend", "error_rate"),
    ],
)
def test_derived_metrics_are_per_minute_differences(
    month: pd.DataFrame, derived: str, source: str
) -> None:
    assert month[derived].iloc[0] == 0
    np.testing.assert_allclose(month[derived].iloc[1:], month[source].diff().iloc[1:])
