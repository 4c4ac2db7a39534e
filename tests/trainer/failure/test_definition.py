"""What a failure is: conditions held in time, onsets, horizon labels (hand-built and generated)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.trainer.failure.definition import (
    Condition,
    FailureDefinition,
    failure_onsets,
    horizon_labels,
)
from services.trainer.failure.model import history_from_frame
from services.trainer.synthetic.generator import SyntheticDataGenerator

CPU = Condition("cpu_saturated", "cpu", "above", 85.0, for_s=300.0)
RESTART = Condition("restart", "mem", "drop", 20.0, 300.0, from_level=80.0)


def one(condition: Condition, times: list[float], values: list[float]) -> np.ndarray:
    definition = FailureDefinition(conditions=(condition,))
    t = np.asarray(times, dtype=float)
    return definition.state(t, np.asarray(values, dtype=float)[:, None], [condition.metric])


def test_a_held_condition_starts_when_it_has_held_for_its_time_with_irregular_steps() -> None:
    times = [0, 70, 100, 190, 260, 330, 365, 400, 460]
    cpu = [50, 90, 91, 88, 92, 95, 90, 89, 70]
    state = one(CPU, times, cpu)
    # over the line from t=70: held 300 s at t=370, so the first sample in the state is t=400
    assert state.tolist() == [False] * 7 + [True, False]
    assert failure_onsets(np.asarray(times, dtype=float), state).tolist() == [400.0]


def test_a_dip_below_the_line_or_a_long_gap_restarts_the_clock() -> None:
    dip = one(CPU, [0, 60, 120, 180, 240, 300, 360, 420], [90, 90, 90, 84, 90, 90, 90, 90])
    assert not dip.any()  # the run after the dip lasts 180 s
    gap = one(CPU, [0, 60, 120, 600, 660, 720, 780, 840, 900], [90] * 9)
    # the 480 s gap (> max_gap_s 300) breaks the run: held again from t=600 at t=900
    assert gap.tolist() == [False] * 8 + [True]


def test_a_drop_from_high_within_its_window_is_a_restart() -> None:
    times = [0, 60, 120, 180, 240, 300, 420, 540]
    mem = [85, 86, 88, 90, 62, 60, 61, 60]
    state = one(RESTART, times, mem)
    # 90 at t=180 -> 62 at t=240: a restart; the state lasts while a sample >= 80 lies in
    # the 300 s before (t=420 still sees t=180), and is over at t=540
    assert state.tolist() == [False, False, False, False, True, True, True, False]
    assert failure_onsets(np.asarray(times, dtype=float), state).tolist() == [240.0]
    slow = one(RESTART, [0, 200, 400, 600], [85, 75, 65, 55])  # 30 points, but over 600 s
    assert not slow.any()


def test_a_history_that_begins_in_a_failure_has_no_onset_there() -> None:
    state = np.array([True, True, False, True])
    assert failure_onsets(np.array([0.0, 60, 120, 180]), state).tolist() == [180.0]


def test_labels_say_an_onset_falls_in_the_next_horizon_and_skip_failure_and_unknown_rows() -> None:
    times = np.arange(0.0, 3000.0, 60.0)
    state = (times >= 1200) & (times < 1500)
    onsets = failure_onsets(times, state)
    assert onsets.tolist() == [1200.0]
    y, keep = horizon_labels(times, onsets, state, horizon_s=300.0)
    positive = times[y & keep].tolist()
    assert positive == [900.0, 960.0, 1020.0, 1080.0, 1140.0]  # onset in (t, t + 300]
    assert not keep[state].any()
    assert not keep[times > times[-1] - 300].any()  # the horizon runs past the data


def test_every_generated_scenario_gives_exactly_one_onset() -> None:
    df = SyntheticDataGenerator(seed=3).generate_full_training_set(
        8, start=datetime(2026, 1, 5, tzinfo=UTC)
    )
    hist = history_from_frame(df)
    definition = FailureDefinition()
    state = definition.state(hist.times, hist.values, hist.metrics)
    onsets = failure_onsets(hist.times, state)
    labels = df["label"].to_numpy()
    kinds = labels[np.searchsorted(hist.times, onsets)]
    for kind in ("cpu_spike", "memory_leak", "error_storm"):
        events = int(np.sum(np.diff((labels == kind).astype(int)) == 1))
        assert events > 0 and int(np.sum(kinds == kind)) == events, kind
    assert set(kinds) <= {"cpu_spike", "memory_leak", "error_storm"}


def test_the_definition_reads_in_words_and_survives_its_dict() -> None:
    definition = FailureDefinition()
    text = definition.describe()
    assert "cpu_usage_percent >= 85 on every sample for 5 min" in text
    assert "falls by 20 or more within 5 min from 80" in text
    assert FailureDefinition.from_dict(definition.to_dict()) == definition
    with pytest.raises(ValueError, match="drop needs"):
        FailureDefinition(conditions=(Condition("bad", "mem", "drop", 20.0),))
