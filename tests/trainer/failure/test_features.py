"""Look-back features: the batch and the one-row paths agree, windows are in time, words read."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.features import (
    BREACH_CAP_MIN,
    FeatureSpec,
    batch_features,
    describe,
    window_features,
)
from services.trainer.failure.model import history_from_frame
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES as METRICS


@pytest.fixture(scope="module")
def irregular():
    """Two generated days with a fifth of the samples dropped and a few values missing."""
    df = SyntheticDataGenerator(seed=11).generate_full_training_set(
        2, start=datetime(2026, 2, 2, tzinfo=UTC)
    )
    hist = history_from_frame(df)
    rng = np.random.default_rng(0)
    keep = rng.random(len(hist.times)) > 0.2
    values = hist.values[keep].copy()
    values[rng.random(values.shape) < 0.01] = np.nan
    spec = FeatureSpec.for_metrics(hist.metrics, FailureDefinition().conditions)
    return spec, hist.times[keep], values


def test_one_row_from_a_short_window_equals_the_batch_row(irregular) -> None:
    spec, t, x = irregular
    batch = batch_features(spec, t, x)
    assert batch.shape == (len(t), len(spec.names))
    for i in [0, 1, 5, 60, 500, 1200, len(t) - 1]:
        first = int(np.searchsorted(t, t[i] - 3600.0, side="right"))
        one = window_features(spec, t[first : i + 1], x[first : i + 1])
        np.testing.assert_array_equal(one, batch[i])
        # a longer history than the hour gives the same row
        np.testing.assert_array_equal(window_features(spec, t[: i + 1], x[: i + 1]), batch[i])


def test_windows_are_measured_in_time_not_rows() -> None:
    spec = FeatureSpec.for_metrics(["cpu_usage_percent"], absolute=["cpu_usage_percent"])
    # a ramp of 0.5 %/min sampled at uneven steps: 10 s, then 2 min, then 30 s
    t = np.concatenate(
        [np.arange(0, 600, 10), np.arange(600, 2400, 120), np.arange(2400, 3700, 30)]
    )
    t = t.astype(float) + 1_767_225_600.0
    cpu = 20.0 + 0.5 * (t - t[0]) / 60.0
    row = window_features(spec, t, cpu[:, None])
    names = spec.names
    assert row[names.index("cpu_usage_percent:slope_15m")] == pytest.approx(0.5)
    assert row[names.index("cpu_usage_percent:slope_60m")] == pytest.approx(0.5)
    recent = t > t[-1] - 300
    assert row[names.index("cpu_usage_percent:mean_5m")] == pytest.approx(cpu[recent].mean())
    assert row[names.index("cpu_usage_percent:rising_for")] == pytest.approx(
        (t[-1] - t[t > t[-1] - 3600][0]) / 60.0
    )


def test_metrics_without_a_failure_line_are_seen_relative_to_their_hour() -> None:
    spec = FeatureSpec.for_metrics(
        ["disk_usage_percent", "cpu_usage_percent"], FailureDefinition().conditions
    )
    assert spec.absolute == ("cpu_usage_percent",)
    t = 1_767_225_600.0 + 60.0 * np.arange(120)
    x = np.column_stack([np.full(120, 60.0), np.full(120, 40.0)])
    row = window_features(spec, t, x)
    assert row[spec.names.index("disk_usage_percent:level_vs_60m")] == 0.0
    assert "disk_usage_percent:mean_60m" not in spec.names
    assert row[spec.names.index("cpu_usage_percent:level")] == 40.0
    assert row[spec.names.index("cpu_saturated:distance")] == pytest.approx(45.0)


def test_descriptions_read_in_the_metrics_words(irregular) -> None:
    spec, _, _ = irregular
    t = 1_767_225_600.0 + 60.0 * np.arange(61)
    x = np.full((61, len(spec.metrics)), 10.0)
    mem = spec.metrics.index("memory_usage_percent")
    x[:, mem] = 50.0 + 0.6 * np.arange(61)
    row = window_features(spec, t, x)
    j = spec.names.index("memory_usage_percent:slope_60m")
    # the window is (t - 60 min, t]: the oldest sample in it is 59 min old
    assert (
        describe(spec, j, row) == "memory rising 0.60%/min over 60 min, at its highest for 59 min"
    )
    eta = spec.names.index("memory_exhausted:eta")
    assert describe(spec, eta, row).startswith("memory reaching the memory_exhausted line in")
    texts = [describe(spec, k, row) for k in range(len(spec.names))]
    assert not any("_usage_" in text for text in texts)


def test_breach_features_give_the_minutes_each_trend_takes_to_reach_the_line() -> None:
    conditions = FailureDefinition().conditions
    spec = FeatureSpec.for_metrics(["cpu_usage_percent", "memory_usage_percent"], conditions)
    # memory: the catalogue alert line (90) and its conditions' levels (80 to drop from, 95)
    assert spec.breach == (
        ("cpu_usage_percent", 85.0),
        ("memory_usage_percent", 80.0),
        ("memory_usage_percent", 90.0),
        ("memory_usage_percent", 95.0),
    )
    t = 1_767_225_600.0 + 60.0 * np.arange(121)
    # CPU flat at 40 for an hour, then 2 %/min for the last 15 minutes; memory at 91
    cpu = np.where(np.arange(121) < 106, 40.0, 40.0 + 2.0 * (np.arange(121) - 105.0))
    x = np.column_stack([cpu, np.full(121, 91.0)])
    row = window_features(spec, t, x)
    names = spec.names
    # the 15-minute window (t - 15 min, t] holds the ramp's 15 samples: 42..70, 2 %/min
    assert row[names.index("cpu_usage_percent:eta_15m_to_85")] == pytest.approx(7.5)
    # the hour's least-squares line: its value now, and its slope
    slope_60 = row[names.index("cpu_usage_percent:slope_60m")]
    hour = t > t[-1] - 3600.0
    fitted = cpu[hour].mean() - slope_60 * ((t[hour] - t[-1]) / 60.0).mean()
    eta_60 = row[names.index("cpu_usage_percent:eta_60m_to_85")]
    assert eta_60 == pytest.approx((85.0 - fitted) / slope_60)
    assert 7.5 < eta_60 < BREACH_CAP_MIN
    assert row[names.index("memory_usage_percent:eta_15m_to_90")] == 0.0  # past the line
    flat = row[names.index("memory_usage_percent:eta_60m_to_95")]
    assert flat == BREACH_CAP_MIN  # not heading for it: "never"
    j = names.index("cpu_usage_percent:eta_15m_to_85")
    assert describe(spec, j, row) == "CPU reaching 85% in 8 min at its 15-min trend"
    j = names.index("memory_usage_percent:eta_60m_to_95")
    assert describe(spec, j, row) == "memory not heading for 95% within 120 min (60-min trend)"
    # a slow trend is capped: at 0.1 %/min, 52 to 85 takes 330 min
    slow = np.column_stack([40.0 + 0.1 * np.arange(121), np.full(121, 50.0)])
    row = window_features(spec, t, slow)
    assert row[names.index("cpu_usage_percent:eta_60m_to_85")] == BREACH_CAP_MIN


def test_a_spec_stored_before_the_breach_features_reads_as_it_was() -> None:
    spec = FeatureSpec.for_metrics(METRICS, FailureDefinition().conditions, breach=())
    stored = spec.to_dict()
    del stored["breach"]  # what a spec stored before the breach features holds
    old = FeatureSpec.from_dict(stored)
    assert old == spec and not any("eta_15m_to" in n for n in old.names)
    assert len(old.names) == 128
    new = FeatureSpec.for_metrics(METRICS, FailureDefinition().conditions)
    assert FeatureSpec.from_dict(new.to_dict()) == new
    assert len(new.names) == 128 + 2 * len(new.breach)
