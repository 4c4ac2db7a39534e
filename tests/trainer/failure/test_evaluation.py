"""Warnings scored against onsets: lead times, true and false warnings, the baselines."""

from __future__ import annotations

import numpy as np

from services.trainer.failure.baselines import definition_lines, persistence, trend_breach
from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.evaluation import score_signal, summarise, warning_signal
from services.trainer.failure.features import FeatureSpec, batch_features

T = 60.0 * np.arange(24 * 60)  # one day of minutes


def test_lead_time_runs_from_the_first_warning_row_to_the_onset() -> None:
    state = np.zeros(len(T), dtype=bool)
    state[600:610] = True  # a failure from minute 600
    above = np.zeros(len(T), dtype=bool)
    above[555:600] = True  # over the threshold from minute 555: opens at 557 (k = 3)
    above[900:905] = True  # a false warning, far from any failure
    rows = warning_signal(above, state, k=3)
    assert rows[557] and not rows[556] and not rows[600:610].any()
    report = score_signal(T, state, np.array([T[600]]), ["cpu_spike"], rows, horizon_s=3600.0)
    assert [(e.warned, e.lead_min) for e in report.events] == [(True, 43.0)]
    assert (report.warnings, report.true_warnings, report.false_on_normal) == (2, 1, 1)
    # normal time: the day minus the failure and the hour before it
    assert abs(report.normal_days - (len(T) - 1 - 10 - 60) / 1440) < 2 / 1440
    s = summarise(report, lead_targets={"cpu_spike": 45.0})
    assert s["precision"] == 0.5
    assert s["per_kind"]["cpu_spike"]["warned"] == 1.0
    assert s["per_kind"]["cpu_spike"]["warned_by_target"] == 0.0  # 43 < 45 minutes


def test_a_warning_too_early_for_the_horizon_is_not_a_warning_of_the_event() -> None:
    state = np.zeros(len(T), dtype=bool)
    state[600:605] = True
    above = np.zeros(len(T), dtype=bool)
    above[400:420] = True  # closes at minute 422, 178 minutes before the onset
    rows = warning_signal(above, state, k=3)
    report = score_signal(T, state, np.array([T[600]]), ["x"], rows, horizon_s=3600.0)
    assert not report.events[0].warned and report.true_warnings == 0


def test_persistence_and_trend_baselines_fire_where_they_should() -> None:
    definition = FailureDefinition()
    lines = definition_lines(definition)
    assert lines["memory_usage_percent"] == 80.0  # the restart's start level, under 95
    metrics = ["cpu_usage_percent"]
    cpu = np.where(np.arange(len(T)) < 700, 30.0, 30.0 + 0.5 * (np.arange(len(T)) - 700))
    cpu = np.minimum(cpu, 99.0)
    flags = persistence(cpu[:, None], metrics, lines)
    assert flags[np.flatnonzero(cpu >= 68.0)].all() and not flags[cpu < 68.0].any()
    spec = FeatureSpec.for_metrics(metrics, definition.conditions)
    x = batch_features(spec, T + 1_767_225_600.0, cpu[:, None])
    trend = trend_breach(spec, x, cpu[:, None], {"cpu_usage_percent": 85.0}, horizon_min=60)
    first = int(np.argmax(trend))
    # 0.5 %/min from 30 %: the line is 110 min away at minute 700; within 60 min at 750
    assert 748 <= first <= 752 and trend[first:].all() and not trend[:700].any()
