"""The per-metric streaming detectors (domain, no server): what a new host's detectors do."""

from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest

from services.trainer.anomaly.evaluation import incident_rows, runs
from services.trainer.anomaly.hostscore import score_host
from services.trainer.anomaly.streaming import HostStream, StreamConfig, likelihood_of, surprise_of
from services.trainer.anomaly.tails import N_BINS, bin_of, counted_surprise, refresh, tail_surprise

METRICS = ("cpu", "latency")
START = 1_700_000_000.0


def feed(
    stream: HostStream, n: int, step: float, rng: np.random.Generator, **level: float
) -> float:
    ts = stream.last_ts if not math.isnan(stream.last_ts) else START
    for _ in range(n):
        ts += step
        stream.update(ts, {m: level.get(m, 50.0) + rng.normal(0, 2) for m in METRICS})
    return ts


def test_a_new_host_learns_quietly_then_flags_a_spike_on_the_right_metric() -> None:
    rng = np.random.default_rng(0)
    stream = HostStream(METRICS)
    first = stream.update(START, {"cpu": 50.0, "latency": 50.0})
    assert first.score == 0.0 and all(m.learning for m in first.metrics)
    ts = feed(stream, 2 * 1440, 60.0, rng)
    normal = stream.score(ts + 60, {"cpu": 51.0, "latency": 49.0})
    spike = stream.score(ts + 60, {"cpu": 95.0, "latency": 49.0})
    assert normal.score < 0.99 and not any(m.learning for m in normal.metrics)
    assert spike.score > 0.9999
    top = spike.top(1)[0]
    assert top.metric == "cpu" and top.lower < 51.0 < top.upper < 95.0
    assert abs(top.expected - 50.0) < 3.0


def test_a_new_hosts_morning_ramp_is_not_never_seen_but_a_day_later_the_range_speaks() -> None:
    """Installed at night, a host's load climbs all morning: every few minutes a value above
    anything seen so far. In its first day that is no anomaly (no daily peak seen yet); a
    value far past a whole day's range is."""
    rng = np.random.default_rng(3)
    stream = HostStream(METRICS)
    ts = START
    for i in range(4 * 60):  # four hours, cpu from 20 to 80 % with noise
        ts += 60
        reading = stream.update(ts, {"cpu": 20.0 + 0.25 * i + rng.normal(0, 1.0), "latency": 50.0})
        assert reading.score < 0.999, f"minute {i}: {reading.top(1)}"
    for _ in range(20 * 60):  # the rest of the day: back down and steady
        ts += 60
        stream.update(ts, {"cpu": 40.0 + rng.normal(0, 1.0), "latency": 50.0 + rng.normal(0, 1)})
    beyond = stream.score(ts + 60, {"cpu": 97.0, "latency": 50.0})
    assert beyond.score > 0.9999 and beyond.top(1)[0].metric == "cpu"


def test_a_flat_metric_is_never_flagged_for_being_flat_but_is_when_it_moves() -> None:
    stream = HostStream(("disk",))
    ts = START
    for _ in range(3 * 1440):
        ts += 60
        reading = stream.update(ts, {"disk": 42.0})
        assert reading.surprise == 0.0
    assert stream.score(ts + 60, {"disk": 42.0}).surprise == 0.0
    assert stream.score(ts + 60, {"disk": 60.0}).score > 0.9999


def test_windows_are_time_not_rows_the_same_history_at_5_minute_steps_scores_alike() -> None:
    # The same two days sampled every minute and every 5 minutes: the level, spread and
    # probation are in seconds, so a spike is as unusual at either rate.
    out = []
    for step in (60.0, 300.0):
        rng = np.random.default_rng(1)
        stream = HostStream(METRICS)
        ts = feed(stream, int(2 * 86400 / step), step, rng)
        out.append(stream.score(ts + step, {"cpu": 80.0, "latency": 50.0}).surprise)
    assert min(out) > surprise_of(0.999)
    assert abs(out[0] - out[1]) < 0.5 * max(out)


def test_late_and_duplicate_samples_are_skipped_and_counted_never_learned() -> None:
    rng = np.random.default_rng(2)
    stream = HostStream(METRICS)
    ts = feed(stream, 200, 60.0, rng)
    before = stream.to_bytes()
    for late in (ts, ts - 600.0):
        reading = stream.update(late, {"cpu": 1e6, "latency": 1e6})
        assert not reading.accepted and reading.score == 0.0
    assert stream.late == 2
    restored = HostStream.from_bytes(before)
    assert restored.score(ts + 60, {"cpu": 50.0}).surprise == pytest.approx(
        stream.score(ts + 60, {"cpu": 50.0}).surprise
    )


def test_a_restart_neither_forgets_nor_relearns() -> None:
    rng = np.random.default_rng(3)
    stream = HostStream(METRICS)
    ts = feed(stream, 1500, 60.0, rng)
    restored = HostStream.from_bytes(stream.to_bytes())
    for i in range(50):
        values = {"cpu": 50.0 + 10 * math.sin(i), "latency": 50.0}
        a = stream.update(ts + 60 * (i + 1), values)
        b = restored.update(ts + 60 * (i + 1), values)
        assert a.surprise == b.surprise and a.metrics == b.metrics
    assert len(stream.to_bytes()) <= 50_000 * len(METRICS) / 14


def test_a_lasting_level_shift_is_flagged_at_its_onset_then_becomes_the_new_normal() -> None:
    rng = np.random.default_rng(4)
    stream = HostStream(METRICS)
    ts = feed(stream, 2 * 1440, 60.0, rng)
    scores = []
    for _ in range(2 * 1440):
        ts += 60
        scores.append(stream.update(ts, {"cpu": 70 + rng.normal(0, 2), "latency": 50.0}).score)
    assert max(scores[:30]) > 0.999  # the onset
    assert np.mean(np.asarray(scores[-720:]) > 0.999) < 0.01  # a day later: normal


def test_missing_metrics_are_neither_scored_nor_learned() -> None:
    rng = np.random.default_rng(5)
    stream = HostStream(METRICS)
    ts = feed(stream, 300, 60.0, rng)
    n_latency = stream.n[1]
    reading = stream.update(ts + 60, {"cpu": 50.0, "latency": None})
    assert [m.metric for m in reading.metrics] == ["cpu"]
    assert stream.n[1] == n_latency


def test_an_unknown_state_format_is_refused_by_name() -> None:
    blob = bytearray(HostStream(METRICS, StreamConfig()).to_bytes())
    blob[blob.index(b'"format":1') + 9] = ord("7")
    with pytest.raises(ValueError, match="format 7"):
        HostStream.from_bytes(bytes(blob))


def test_likelihood_and_surprise_are_inverse() -> None:
    for s in (0.5, 3.0, 7.5):
        assert surprise_of(likelihood_of(s)) == pytest.approx(s, rel=1e-6)


def daily_burst_incidents(
    config: StreamConfig, days: int, seed: int = 0
) -> tuple[list[int], float]:
    """Incidents per day (threshold 0.999, 3 in a row) of a host whose `backup` metric bursts
    from 10 to 80 for 15 minutes at 02:00 every day (a daily job), and the surprise of a
    burst to 300 (never seen) after the last day."""
    rng = np.random.default_rng(seed)
    stream = HostStream(("backup", "cpu"), config)
    day0 = START - START % 86400
    scores = []
    ts = day0
    for day in range(days):
        for minute in range(1440):
            ts = day0 + day * 86400 + minute * 60
            burst = 120 <= minute < 135
            backup = 80.0 + rng.normal(0, 1) if burst else 10.0 + rng.normal(0, 0.2)
            reading = stream.update(ts, {"backup": backup, "cpu": 40.0 + rng.normal(0, 2)})
            scores.append(reading.score)
    above = np.array(scores) >= 0.999
    per_day = [len(runs(incident_rows(above[d * 1440 : (d + 1) * 1440], 3))) for d in range(days)]
    new = stream.score(ts + 60, {"backup": 300.0, "cpu": 40.0})
    return per_day, new.surprise


def test_a_daily_jobs_burst_stops_raising_incidents_once_its_counts_say_it_is_common() -> None:
    """The power-law tail alone calls a burst seen every day for a week 'p < 1e-8' (it is 1 %
    of the samples, at the edge of the tail's fit); the counts cap says what the histogram
    saw. A burst far past anything seen is still flagged."""
    capped, capped_new = daily_burst_incidents(StreamConfig(), days=10)
    tail_only, tail_new = daily_burst_incidents(StreamConfig(counts_cap=0.0), days=10)
    assert tail_only[5:] == [1, 1, 1, 1, 1]
    assert sum(capped[5:]) <= 2
    assert capped_new > 8.0 and tail_new > 8.0


def test_counted_surprise_never_exceeds_the_tail_and_needs_enough_counts() -> None:
    calib = np.zeros((1, 1, N_BINS))
    quantiles = np.zeros((1, 1, 4))
    calib[0, 0, bin_of(1.0)] = 990.0
    calib[0, 0, bin_of(100.0)] = 10.0  # 1 % of the weight at 100
    refresh(calib, quantiles, 1.0)
    q, h = quantiles[0, 0], calib[0, 0]
    for dev in (0.5, 1.0, 5.0, 100.0, 500.0):
        assert counted_surprise(q, h, dev, 0.5, 5.0) <= tail_surprise(q, dev, 0.5, 5.0) + 1e-12
    # 10 samples at or above 100 of 1,000: p is at least 0.01
    assert counted_surprise(q, h, 100.0, 0.5, 5.0) == pytest.approx(2.0, abs=1e-9)
    assert tail_surprise(q, 100.0, 0.5, 5.0) > 2.0
    # fewer than min_weight at or above: the tail alone
    assert counted_surprise(q, h, 100.0, 0.5, 20.0) == tail_surprise(q, 100.0, 0.5, 20.0)
    assert counted_surprise(q, h, 500.0, 0.5, 5.0) == tail_surprise(q, 500.0, 0.5, 5.0)


def test_a_reader_holding_the_lock_sees_no_update_half_done() -> None:
    # The scoring loop updates a host's state in a worker thread (``score_host``) while
    # predict reads it on the event loop: under the stream's lock a read sees the state
    # between two samples, so it scores exactly as a copy taken under the same lock does.
    metrics = tuple(f"m{i}" for i in range(14))
    stream = HostStream(metrics)
    rng = np.random.default_rng(5)
    n = 6000
    times = 1.7e9 + 60.0 * np.arange(n)
    values = rng.normal(50, 5, (n, len(metrics))) * (1 + (np.arange(n) % 97 == 0)[:, None])
    writer = threading.Thread(
        target=score_host, args=(stream, times, values), kwargs={"forest": None, "threshold": 0.99}
    )
    sample = dict(zip(metrics, (values[0] * 3).tolist(), strict=True))
    checked = 0
    writer.start()
    while writer.is_alive() or checked == 0:
        with stream.lock:
            at = stream.last_ts + 1.0 if not math.isnan(stream.last_ts) else times[0]
            seen = stream.score(at, sample)
            snapshot = copy.deepcopy({k: v for k, v in vars(stream).items() if k != "lock"})
        frozen = HostStream(metrics)
        vars(frozen).update(snapshot)
        assert frozen.score(at, sample) == seen
        checked += 1
    writer.join()
    assert checked > 1 and stream.samples == n
