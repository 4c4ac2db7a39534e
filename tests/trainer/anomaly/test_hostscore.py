"""A host's score joins its two layers: each alone past the threshold, or both unusual at once
(Fisher's method on their p-values), never one layer's ordinary noise amplified."""

from __future__ import annotations

import math

import pytest

from services.trainer.anomaly.hostscore import combine, joint_likelihood

THRESHOLD = 0.999


def test_both_layers_moderately_unusual_at_once_pass_the_threshold_neither_passes_alone() -> None:
    stream, forest, forest_threshold = 0.996, 0.996, 0.999
    assert stream < THRESHOLD and forest < forest_threshold
    score = combine(stream, forest, forest_threshold, THRESHOLD)
    assert score >= THRESHOLD
    assert score == joint_likelihood(stream, forest)


def test_one_layer_at_its_normal_adds_nothing_to_the_other() -> None:
    for p in (0.5, 0.01, 1e-3, 1e-4, 1e-6):
        # the forest scoring its median: the joint is below the per-metric layer alone
        assert joint_likelihood(1.0 - p, 0.5) < 1.0 - p
        assert joint_likelihood(1.0 - p, 0.0) < 1.0 - p
        assert combine(1.0 - p, 0.0, 0.999, THRESHOLD) == 1.0 - p


@pytest.mark.parametrize(("stream", "forest"), [(0.99, 0.99), (0.995, 0.95), (0.9, 0.999)])
def test_joint_p_is_fishers_method(stream: float, forest: float) -> None:
    q = (1.0 - stream) * (1.0 - forest)
    assert joint_likelihood(stream, forest) == pytest.approx(1.0 - q * (1.0 - math.log(q)))
    # two p of 0.01 each do not pass 0.999: Fisher's p is 1.02e-3
    assert (joint_likelihood(stream, forest) >= THRESHOLD) == (q * (1 - math.log(q)) <= 1e-3)


def test_a_certain_layer_makes_the_joint_certain_and_no_forest_leaves_the_stream() -> None:
    assert joint_likelihood(1.0, 0.2) == 1.0
    assert combine(0.7, None, 1.0, THRESHOLD) == 0.7
    assert combine(0.7, 1.0, 0.999, THRESHOLD) == 1.0


def test_a_reported_band_stays_within_what_the_metric_can_be() -> None:
    from services.trainer.anomaly.hostscore import reading_dicts
    from services.trainer.anomaly.streaming import MetricReading

    def reading(metric: str, lower: float, upper: float, surprise: float) -> MetricReading:
        return MetricReading(metric, 50.0, 40.0, lower, upper, 0.9, surprise, False)

    out = reading_dicts(
        [
            reading("response_time_p95", -34.0, 250.0, 4.0),  # latency is never negative
            reading("cpu_usage_percent", -9.5, 104.0, 3.0),  # nor CPU outside 0-100 %
            reading("cpu_rate_of_change", -2.0, 2.0, 2.0),  # a rate of change can fall
            reading("m07", -1.0, 1.0, 1.0),  # a metric outside the catalogue: as computed
        ],
        k=4,
    )
    bands = {d["metric"]: (d["lower"], d["upper"]) for d in out}
    assert bands == {
        "response_time_p95": (0.0, 250.0),
        "cpu_usage_percent": (0.0, 100.0),
        "cpu_rate_of_change": (-2.0, 2.0),
        "m07": (-1.0, 1.0),
    }
