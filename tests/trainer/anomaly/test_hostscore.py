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
