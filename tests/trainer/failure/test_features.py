"""Look-back features: the batch and the one-row paths agree, windows are in time, words read."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.features import (
    FeatureSpec,
    batch_features,
    describe,
    window_features,
)
from services.trainer.failure.model import history_from_frame
from services.trainer.synthetic.generator import SyntheticDataGenerator


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
