"""A host's forest threshold from its own false-incident rate (the scheduled training's rule):
a calm host gets a lower threshold than one whose normal life is bursty, the choice fits the
budget on the held-out third, and it is recorded with the model version."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from services.trainer.anomaly import artifact
from services.trainer.anomaly.budget import (
    GRID,
    choose_contamination,
    held_out_incidents,
    replay_stream,
)
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.features import frame_times
from services.trainer.anomaly.training import STREAM_METRICS, train_detector
from services.trainer.synthetic.generator import SyntheticDataGenerator

METRICS = ["cpu_usage_percent", "memory_usage_percent", "error_rate"]
DAYS = 4


def _calm(seed: int = 0) -> pd.DataFrame:
    """Four days of a host with a daily cycle and noise, nothing else."""
    n = DAYS * 1440
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-03-01", periods=n, freq="1min", tz="UTC")
    day = np.sin(2 * np.pi * np.arange(n) / 1440)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "cpu_usage_percent": 40 + 10 * day + 3 * rng.standard_normal(n),
            "memory_usage_percent": 60 + 2 * rng.standard_normal(n),
            "error_rate": np.abs(0.01 * rng.standard_normal(n)),
        }
    )


def _bursty(seed: int = 0) -> pd.DataFrame:
    """The calm host with a 6-minute CPU burst every 3 hours of its last third: normal life
    for it, and each burst is an incident at any forest threshold."""
    frame = _calm(seed)
    n = len(frame)
    cpu = frame["cpu_usage_percent"].to_numpy().copy()
    for start in range(2 * n // 3 + 30, n - 10, 180):
        cpu[start : start + 6] = 99.0
    frame["cpu_usage_percent"] = cpu
    return frame


@lru_cache(maxsize=4)
def _stream(kind: str) -> np.ndarray:
    frame = _calm() if kind == "calm" else _bursty()
    values = frame.reindex(columns=METRICS).to_numpy(float)
    return replay_stream(frame_times(frame), values, METRICS)


def _choose(kind: str, budget: float):
    frame = _calm() if kind == "calm" else _bursty()
    return choose_contamination(
        frame,
        METRICS,
        _stream(kind),
        threshold=0.999,
        consecutive=3,
        budget=budget,
        n_estimators=30,
    )


def test_the_choice_is_the_largest_contamination_within_the_budget() -> None:
    choice = _choose("calm", 1.0)
    assert set(choice.incidents_per_day) == set(GRID)
    assert choice.held_out_days == pytest.approx(DAYS / 3, abs=0.01)
    within = [c for c, v in choice.incidents_per_day.items() if v <= 1.0]
    assert within and choice.contamination == max(within)
    # a larger share of the host's own history flagged never opens fewer incidents here
    counts = [choice.incidents_per_day[c] for c in sorted(GRID)]
    assert counts[-1] >= counts[0]


def test_a_bursty_host_gets_a_higher_forest_threshold_than_a_calm_one() -> None:
    calm, bursty = _choose("calm", 1.0), _choose("bursty", 1.0)
    assert bursty.incidents_per_day[min(GRID)] > 1.0  # each burst is one incident
    assert bursty.contamination == min(GRID)  # nothing fits: the least the forest flags
    assert calm.contamination > bursty.contamination


def test_no_budget_room_leaves_the_smallest_and_a_wide_budget_the_largest() -> None:
    assert _choose("calm", -1.0).contamination == min(GRID)
    assert _choose("calm", 1e9).contamination == max(GRID)


def test_held_out_incidents_count_either_layer_confirmed_three_in_a_row() -> None:
    stream = np.zeros(20)
    forest = np.zeros(20)
    stream[2:4] = 0.9999  # two rows: not confirmed
    forest[4:5] = 0.99  # a third row in a row, from the forest: one incident
    stream[10:13] = 0.9999  # a second incident
    assert held_out_incidents(stream, forest, 0.98, threshold=0.999, k=3) == 2
    assert held_out_incidents(stream, forest, 0.995, threshold=0.999, k=3) == 1


def test_a_metric_first_sent_in_the_last_third_does_not_stop_the_choice() -> None:
    frame = _calm()
    late = np.full(len(frame), np.nan)
    late[-300:] = 5.0
    frame["disk_usage_percent"] = late
    choice = choose_contamination(
        frame,
        [*METRICS, "disk_usage_percent"],
        _stream("calm"),
        threshold=0.999,
        consecutive=3,
        budget=1.0,
        n_estimators=30,
    )
    assert choice.contamination == _choose("calm", 1.0).contamination


def test_a_history_too_short_to_hold_a_third_out_is_refused() -> None:
    frame = _calm().iloc[:2]
    with pytest.raises(ValueError, match="too short"):
        choose_contamination(
            frame, METRICS, np.zeros(2), threshold=0.999, consecutive=3, budget=1.0
        )


def test_scheduled_training_runs_its_forest_at_the_chosen_contamination() -> None:
    frame = _calm()
    outcome = train_detector(frame, contamination=0.003, n_estimators=30, incident_budget=1.0)
    spent = outcome.parameters["incident_budget"]
    assert spent["per_day"] == 1.0 and spent["threshold"] == 0.999
    chosen = spent["contamination"]
    assert chosen in GRID
    assert outcome.parameters["effective_contamination"] == chosen
    # the choice is the rule's on the per-metric layer the scoring loop runs (all metrics)
    stream = replay_stream(
        frame_times(frame), frame.reindex(columns=STREAM_METRICS).to_numpy(float), STREAM_METRICS
    )
    assert (
        chosen
        == choose_contamination(
            frame, METRICS, stream, threshold=0.999, consecutive=3, budget=1.0, n_estimators=30
        ).contamination
    )
    det = artifact.load(outcome.artifact, outcome.sha256)
    reference = AnomalyDetector(contamination=chosen, n_estimators=30).fit(frame, METRICS)
    assert det.fitted_threshold == reference.fitted_threshold


def test_labelled_and_synthetic_histories_keep_their_requested_contamination() -> None:
    month = SyntheticDataGenerator(seed=3).generate_full_training_set(DAYS)
    outcome = train_detector(
        month, contamination=0.05, n_estimators=20, synthetic_seed=3, incident_budget=1.0
    )
    assert outcome.parameters["incident_budget"] is None
    assert outcome.parameters["contamination"] == 0.05


def test_held_out_incidents_count_both_layers_unusual_at_once_as_the_loop_does() -> None:
    # Three rows where each layer alone is under its threshold (p 0.004 each) but the two
    # together are past it (Fisher's p 1.9e-4): one incident, as the scoring loop opens it.
    stream = np.zeros(20)
    forest = np.zeros(20)
    stream[5:8] = 0.996
    forest[5:8] = 0.996
    assert held_out_incidents(stream, forest, 0.999, threshold=0.999, k=3) == 1
    forest[5:8] = 0.9  # the forest not unusual enough: nothing
    assert held_out_incidents(stream, forest, 0.999, threshold=0.999, k=3) == 0
