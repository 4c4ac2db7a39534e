"""Behaviour of the anomaly detector: fast path, calibration, feedback, storage, quality."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.trainer.anomaly import artifact
from services.trainer.anomaly.calibration import Calibrator
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    Event,
    attribution_hits,
    detection_counts,
    incident_rows,
)
from services.trainer.anomaly.features import frame_times
from services.trainer.anomaly.forest import ScoringThreads
from services.trainer.anomaly.history import RecentHistory, ShiftMemory, trailing_peak
from services.trainer.anomaly.threshold import adjusted_threshold, severity
from shared.workers import shutdown, thread_pool

SMD = Path(__file__).resolve().parents[2] / "data" / "smd"


def _frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
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


def _arrays(det: AnomalyDetector, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds and metric values of a frame's rows, in the detector's metric order."""
    return frame_times(frame), frame.reindex(columns=list(det.metrics)).to_numpy(dtype=float)


def _history(det: AnomalyDetector, frame: pd.DataFrame) -> RecentHistory:
    """A host's history seeded from the frame's rows, as the service seeds one."""
    return det.seeded_history(*_arrays(det, frame))


@lru_cache(maxsize=1)
def _trained() -> tuple[AnomalyDetector, pd.DataFrame]:
    df = _frame()
    return AnomalyDetector(n_estimators=50).fit(df), df


def test_fast_path_equals_sklearn() -> None:
    det, df = _trained()
    assert det.forest is not None and det.flat is not None
    x = det.standardise(det.extractor.transform(df).matrix)
    extreme = x[:20] * 50.0  # outside the training range in every direction
    for rows in (x[:300], extreme):
        np.testing.assert_allclose(
            det.flat.score_samples(rows), det.forest.score_samples(rows), atol=1e-9, rtol=0
        )


def test_online_score_equals_batch_score() -> None:
    det, df = _trained()
    batch = det.score_frame(df)
    hist = _history(det, df.iloc[:2900])  # the look-back and 24 h of shift memory
    assert det.history_samples < 2900
    metrics = list(det.metrics)
    for i in range(2900, 2950):
        res = det.score_sample(
            {m: float(df.at[i, m]) for m in metrics},
            timestamp=df.at[i, "timestamp"],
            history=hist,
            threshold=det.fitted_threshold,
        )
        assert res.score == pytest.approx(batch.score[i], abs=1e-9)
        assert res.is_anomaly == bool(batch.is_anomaly[i])


def test_after_a_long_gap_online_equals_batch_and_the_past_is_not_averaged_in() -> None:
    # After a gap longer than the look-back the run starts again, online as in a batch: the
    # raw forest scores of the first rows after it are those of the rows alone, not averaged
    # with rows from before the gap; and for its look-back and smoothing the forest abstains
    # (NaN), online as in a batch (tests/trainer/anomaly/test_forest_gaps.py).
    det, df = _trained()
    late = df.iloc[2900:3000].copy()
    late["timestamp"] = late["timestamp"] + pd.Timedelta(hours=20)
    joined = pd.concat([df.iloc[:2900], late], ignore_index=True)
    batch = det.score_frame(joined)
    alone = det.score_frame(late.reset_index(drop=True))
    hist = _history(det, df.iloc[:2900])
    metrics = list(det.metrics)
    span = det.extractor.config.lookback + det.smoothing
    for i in range(2900, 3000):
        res = det.score_sample(
            {m: float(joined.at[i, m]) for m in metrics},
            timestamp=joined.at[i, "timestamp"],
            history=hist,
            threshold=det.fitted_threshold,
        )
        if i - 2900 < span:
            assert np.isnan(res.score) and np.isnan(batch.score[i])
        else:
            assert res.score == pytest.approx(batch.score[i], abs=1e-9)
    # The forest part of the first rows after the gap is that of the rows alone.
    np.testing.assert_allclose(batch.forest_score[2900:], alone.forest_score, atol=1e-9, rtol=0)


def test_scores_are_calibrated_and_threshold_matches_contamination() -> None:
    det, df = _trained()
    scores = det.score_frame(df).score
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.mean(scores >= det.fitted_threshold) == pytest.approx(det.contamination, abs=0.01)
    assert det.fitted_threshold == pytest.approx(1 - det.contamination, abs=0.01)


def test_calibrator_is_monotone_and_bounded() -> None:
    rng = np.random.default_rng(3)
    cal = Calibrator.fit(np.concatenate([rng.normal(size=5000), np.zeros(500)]))
    x = np.linspace(-10, 50, 20001)
    y = cal(x)
    assert np.all(np.diff(y) >= 0)
    assert y[0] == 0.0 and np.all(y < 1.0)
    assert y[-1] > cal(np.array([5.0]))[0]  # beyond training it keeps ranking


def test_an_obvious_anomaly_scores_high_and_names_its_metric() -> None:
    det, df = _trained()
    hist = det.new_history()
    hist.extend(*_arrays(det, df.iloc[-200:]))
    ts = df["timestamp"].iloc[-1]
    res = None
    for k in range(1, 6):
        sample = {"cpu_usage_percent": 99.0, "memory_usage_percent": 60.0, "error_rate": 0.01}
        at = ts + pd.Timedelta(minutes=k)
        res = det.score_sample(sample, timestamp=at, history=hist, threshold=det.fitted_threshold)
    assert res is not None and res.is_anomaly
    assert res.severity in ("high", "critical")
    top = res.contributions[0]
    assert top.metric == "cpu_usage_percent"
    assert top.observed == 99.0
    assert 20 < top.expected < 70
    all_shares = det.contributions(hist.features(), 0, top_k=len(det.metrics))
    assert sum(c.share for c in all_shares) == pytest.approx(1.0)


def test_missing_metrics_are_filled() -> None:
    det, df = _trained()
    hist = det.new_history()
    ts = df["timestamp"].iloc[-1]
    res = det.score_sample(
        {"cpu_usage_percent": 41.0}, timestamp=ts, history=hist, threshold=det.fitted_threshold
    )
    assert np.isfinite(res.score)
    assert det.training_medians["memory_usage_percent"] == pytest.approx(60, abs=0.5)


def test_severity_cutoffs() -> None:
    assert [severity(s) for s in (0.5, 0.95, 0.99, 0.999)] == ["low", "medium", "high", "critical"]


def test_threshold_feedback_moves_in_the_right_direction() -> None:
    up = adjusted_threshold(0.95, "false_positive", 0.97)
    assert up > 0.95
    down = adjusted_threshold(up, "true_positive", 0.90)
    assert down < up
    assert adjusted_threshold(up, "false_positive", 0.3) == up  # not flagged anyway
    assert adjusted_threshold(0.9999, "false_positive", 1.0) == 0.9999  # bounded
    with pytest.raises(ValueError):
        adjusted_threshold(0.95, "maybe", 0.9)  # type: ignore[arg-type]


def test_serialization_roundtrip_and_checksum() -> None:
    det, df = _trained()
    blob = artifact.dump(det)
    digest = artifact.sha256(blob)
    loaded = artifact.load(blob, digest)
    np.testing.assert_array_equal(loaded.score_frame(df).score, det.score_frame(df).score)
    assert loaded.fitted_threshold == det.fitted_threshold
    assert loaded.training_medians == det.training_medians
    assert isinstance(loaded.new_history().memory, ShiftMemory)
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        artifact.load(bytes(tampered), digest)


def _rewritten(blob: bytes, edit: Any) -> bytes:
    """The artifact with its arrays (config decoded as a dict) changed by ``edit``."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays["config"].tobytes().decode())
    edit(config, arrays)
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_the_stored_layout_is_format_1_as_before() -> None:
    """Models stored before this build load: the layout, keys and fixed values are unchanged;
    the correlation view's keys come after them, and its arrays (test_correlation.py) only
    when it has one (these three independent metrics leave no relation to break)."""
    det, _ = _trained()
    with np.load(io.BytesIO(artifact.dump(det)), allow_pickle=False) as npz:
        names = list(npz.files)
        config = json.loads(npz["config"].tobytes().decode())
    assert det.corr is None
    assert list(config)[-2:] == ["correlation", "corr_tail"] and config["corr_tail"] is None
    config = {k: v for k, v in config.items() if k not in ("correlation", "corr_tail")}
    assert list(config) == [
        "format_version", "contamination", "n_estimators", "max_samples", "smoothing",
        "random_state", "threshold", "threshold_method", "pot_level", "pot_risk",
        "shift_memory_hours", "n_train", "metrics", "feature_config", "depth", "normaliser",
        "tails",
    ]  # fmt: skip
    assert config["format_version"] == 1
    assert (config["threshold_method"], config["shift_memory_hours"]) == ("quantile", 24)
    assert list(config["feature_config"]) == [
        "interval_s", "mean_windows", "std_windows", "min_windows", "max_windows", "lags",
        "baseline_window", "baseline_stat", "level_median", "time_features",
    ]  # fmt: skip
    assert names == [
        "config", "forest", "medians", "scales", "mean", "scale", "dev_ref", "z_ref",
        "jump_ref", "cal_forest_knots", "cal_forest_probs", "cal_dev_knots", "cal_dev_probs",
        "cal_final_knots", "cal_final_probs", "cal_jump_knots", "cal_jump_probs",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c, a: c.update(format_version=2),
            "artifact format 2 is not supported (this build reads format 1); retrain",
        ),
        (lambda c, a: c.pop("format_version"), "artifact format None is not supported"),
        # Layouts written before the options were adopted, or with variants not adopted.
        (lambda c, a: c.pop("shift_memory_hours"), "shift_memory_hours missing"),
        (lambda c, a: c.update(shift_memory_hours=0), "shift_memory_hours 0"),
        (lambda c, a: c.update(threshold_method="pot"), "threshold_method 'pot'"),
        (lambda c, a: c.pop("threshold_method"), "threshold_method missing"),
        (lambda c, a: c["feature_config"].update(baseline_stat="median"), "baseline_stat"),
        (lambda c, a: c["feature_config"].pop("level_median"), "level_median missing"),
        (lambda c, a: c["feature_config"].update(level_median=3), "level_median 3"),
        (lambda c, a: [a.pop(k) for k in ("cal_jump_knots", "cal_jump_probs")], "no jump view"),
    ],
)
def test_other_artifact_formats_are_refused_naming_why(edit: Any, message: str) -> None:
    det, _ = _trained()
    old = _rewritten(artifact.dump(det), edit)
    with pytest.raises(ValueError, match="retrain") as refused:
        artifact.load(old, artifact.sha256(old))
    assert message in str(refused.value)


def test_invalid_contamination_is_rejected() -> None:
    for c in (0.0, 0.6):
        with pytest.raises(ValueError):
            AnomalyDetector(contamination=c)


@lru_cache(maxsize=1)
def _service_evaluation() -> dict[str, Any]:
    """What the trainer stores for a model trained on a synthetic month (seed 42)."""
    from services.trainer.anomaly.training import train_detector
    from services.trainer.synthetic.generator import SyntheticDataGenerator

    train = SyntheticDataGenerator(42).generate_full_training_set(30)
    outcome = train_detector(train, contamination=0.05, n_estimators=100, synthetic_seed=42)
    assert outcome.parameters["trained_on"] == "normal-labelled rows"
    return outcome.evaluation


def test_synthetic_quality_on_another_seed_as_the_service_detects() -> None:
    """The issue's targets on another seed's month, counted as the service raises
    incidents (3 samples in a row above the threshold)."""
    result = _service_evaluation()["synthetic"]
    assert result["consecutive"] == 3
    assert "seed 7" in result["source"]
    assert set(result["scenarios"]) == {"cpu_spike", "memory_leak", "error_storm"}
    for name, figures in result["scenarios"].items():
        assert figures["event_recall"] >= 0.9, (name, figures)
    assert result["overall"]["event_precision"] >= 0.8, result["overall"]


def test_smd_machine_beats_plain_isolation_forest() -> None:
    from sklearn.ensemble import IsolationForest

    train = pd.read_csv(SMD / "machine-2-5_train.csv.gz", parse_dates=["timestamp"])
    test = pd.read_csv(SMD / "machine-2-5_test.csv.gz", parse_dates=["timestamp"])
    raw = json.loads((SMD / "machine-2-5_interpretation.json").read_text())
    metrics = [f"m{i:02d}" for i in range(1, 39)]
    events = [Event(e["start"], e["end"], "anomaly") for e in raw]

    det = AnomalyDetector(contamination=0.01).fit(train, metrics)
    history = det.history_samples  # what the service reads before scoring
    scored = det.score_frame(pd.concat([train.iloc[-history:], test], ignore_index=True))
    flags = incident_rows(scored.is_anomaly[history:], 3)  # as the service opens incidents
    ours = detection_counts(events, flags)

    base = IsolationForest(n_estimators=100, random_state=0).fit(train[metrics].to_numpy())
    cut = np.quantile(-base.score_samples(train[metrics].to_numpy()), 0.99)
    theirs = detection_counts(events, -base.score_samples(test[metrics].to_numpy()) > cut)

    tops, truths = [], []
    for e in raw:
        hit = np.flatnonzero(flags[e["start"] : e["end"] + 1])
        if len(hit):
            row = history + e["start"] + int(hit[0])
            tops.append([c.metric for c in det.contributions(scored.features, row, top_k=3)])
            truths.append(e["metrics"])
    attr = attribution_hits(tops, truths, n_metrics=38, k=3)

    # Measured (as incidents vs the baseline's raw flags): F1 0.35 vs 0.20, event recall
    # 0.90 vs 0.24, event precision 0.73 vs 0.08, hit@3 1.00.
    assert ours.f1 >= 0.3 and ours.f1 > theirs.f1 + 0.1
    assert ours.event_recall >= 0.85 and ours.event_recall > theirs.event_recall + 0.4
    assert ours.event_precision >= 0.5 and ours.event_precision > theirs.event_precision + 0.3
    assert attr.hit_rate >= 0.85 and attr.hit_rate > attr.chance + 0.3


def test_trailing_peak_matches_a_direct_count() -> None:
    rng = np.random.default_rng(5)
    hours = np.sort(rng.choice(np.arange(200), 600))  # gaps and repeated hours
    shift = rng.exponential(size=(600, 3))
    got = trailing_peak(hours, shift, window=24, rank=2)
    for i in range(0, 600, 7):
        inside = (hours >= hours[i] - 24) & (hours < hours[i])
        for j in range(3):
            peaks = sorted(
                (shift[inside & (hours == h), j].max() for h in np.unique(hours[inside])),
                reverse=True,
            )
            want = peaks[1] if len(peaks) >= 2 else 0.0
            assert got[i, j] == want


def test_shift_memory_folded_in_pieces_equals_one_batch() -> None:
    rng = np.random.default_rng(6)
    hours = np.sort(rng.integers(0, 120, 900))
    shift = rng.exponential(size=(900, 2))
    want = trailing_peak(hours, shift, window=24, rank=2)
    memory = ShiftMemory(window=24, metrics=2)
    got = np.zeros_like(want)
    for lo in range(0, 900, 37):  # uneven pieces, some splitting an hour
        sl = slice(lo, lo + 37)
        got[sl] = memory.reference(hours[sl], shift[sl], 2)
        memory.fold(hours[sl], shift[sl])
    np.testing.assert_array_equal(got, want)
    assert memory.hours.min() >= hours.max() - 24  # older hours are forgotten


def _volatile_frame() -> pd.DataFrame:
    """Four quiet days, then a day on which cpu jumps by 16 points for 15 minutes every two
    hours, then the same jump once more, then a jump of 60 points."""
    df = _frame(n=6 * 1440, seed=3)
    cpu = df["cpu_usage_percent"].to_numpy(copy=True)
    for start in range(4 * 1440, 5 * 1440, 120):
        cpu[start : start + 15] += 16.0
    cpu[5 * 1440 + 60 : 5 * 1440 + 75] += 16.0
    cpu[5 * 1440 + 300 : 5 * 1440 + 315] += 60.0
    df["cpu_usage_percent"] = cpu
    return df


def test_shift_memory_quiets_a_metric_that_turned_volatile_but_not_a_new_extreme() -> None:
    df = _volatile_frame()
    det = AnomalyDetector(n_estimators=50, contamination=0.01).fit(df.iloc[: 4 * 1440])
    scores = det.score_frame(df).score
    repeat = slice(5 * 1440 + 64, 5 * 1440 + 75)  # the 13th 16-point jump within a day
    extreme = slice(5 * 1440 + 304, 5 * 1440 + 315)
    first = slice(4 * 1440 + 4, 4 * 1440 + 15)  # the first jump of the volatile day
    assert scores[extreme].max() >= det.fitted_threshold  # far beyond the day's peaks: alarms
    assert scores[first].max() >= det.fitted_threshold
    # The shift part itself: beyond its training reference, within the memory's.
    feats = det.extractor.transform(df)
    ref = det._batch_memory_ref(feats)
    cpu = det.metrics.index("cpu_usage_percent")
    dev = np.abs(feats.deviation[repeat, cpu])
    assert (dev / det.dev_ref[cpu]).max() > 1.0
    assert (dev / np.maximum(det.dev_ref[cpu], ref[repeat, cpu])).max() <= 1.0
    ext = np.abs(feats.deviation[extreme, cpu])
    assert (ext / np.maximum(det.dev_ref[cpu], ref[extreme, cpu])).max() > 2.0
    # Calibrated, the repeat's shift view scores lower than against training alone.
    fitted = det.fitted()
    with_memory = fitted.cal_dev(det._shift_score(feats, ref))
    training_only = fitted.cal_dev(det._shift_score(feats, np.zeros_like(ref)))
    assert with_memory[repeat].max() < training_only[repeat].max()


def test_a_late_sample_is_scored_against_the_memory_of_its_own_time() -> None:
    det, df = _trained()
    hist = _history(det, df.iloc[:2900])
    metrics = list(det.metrics)
    late_at = 2850
    copy = hist.copy_until(float(pd.Timestamp(df.at[late_at - 1, "timestamp"]).timestamp()))
    assert copy.memory.hours.max() <= hist.memory.hours.max()
    res = det.score_sample(
        {m: float(df.at[late_at, m]) for m in metrics},
        timestamp=df.at[late_at, "timestamp"],
        history=copy,
        threshold=det.fitted_threshold,
    )
    assert res.score == pytest.approx(det.score_frame(df).score[late_at], abs=1e-9)
    assert len(hist) == hist.capacity  # the original history is untouched


def test_a_lone_extreme_sample_scores_high_but_cannot_open_an_incident() -> None:
    df = _frame(n=4 * 1440, seed=8)
    train, live = df.iloc[: 3 * 1440], df.iloc[3 * 1440 :].reset_index(drop=True)
    det = AnomalyDetector(n_estimators=50, contamination=0.01).fit(train)
    spiked = live.copy()
    spiked.loc[600, "cpu_usage_percent"] = 99.0  # one sample, every other metric normal
    scores = det.score_frame(spiked)
    assert scores.is_anomaly[600] and scores.score[600] >= 0.999
    # The jump view is what flags it: the sample against the previous hour's mean.
    assert det._jump_score(scores.features)[600] > 1.0
    # Above the threshold on that sample alone, not three in a row: no incident.
    assert not incident_rows(scores.is_anomaly, 3)[595:610].any()
    # The same jump held for five samples is an incident.
    held = live.copy()
    held.loc[600:604, "cpu_usage_percent"] = 99.0
    assert incident_rows(det.score_frame(held).is_anomaly, 3)[602:606].any()


def test_threaded_batch_scoring_equals_one_thread_bit_for_bit() -> None:
    det, _ = _trained()
    blob = artifact.dump(det)
    pool = thread_pool(2, name="test-scoring")
    try:
        threaded = artifact.load(blob, artifact.sha256(blob), threads=ScoringThreads(pool, 2))
        single = artifact.load(blob, artifact.sha256(blob))
        df = _frame(n=9000, seed=2)
        a, b = threaded.score_frame(df), single.score_frame(df)
    finally:
        shutdown(pool)
    np.testing.assert_array_equal(a.forest_score, b.forest_score)
    np.testing.assert_array_equal(a.score, b.score)


def test_a_model_stored_by_the_build_before_scores_as_it_did() -> None:
    """tests/data/anomaly: a model written by the code before the anomaly room (10 trees on
    ``_frame(1500)``) and its scores of ``_frame(1500, seed=5)`` at the time. Equal to 1e-12,
    not bit for bit: numpy's vector paths depend on the CPU (seen here: 31 of 1,500 scores
    differ by 1.5e-14 on a machine with AVX-512), the model and its arithmetic do not."""
    data = Path(__file__).resolve().parents[2] / "data" / "anomaly"
    blob = (data / "model-format-1.npz").read_bytes()
    loaded = artifact.load(blob, artifact.sha256(blob))
    np.testing.assert_allclose(
        loaded.score_frame(_frame(1500, seed=5)).score,
        np.load(data / "model-format-1-scores.npy"),
        rtol=0,
        atol=1e-12,
    )
    assert loaded.fitted_threshold == pytest.approx(0.95, abs=0.01)


def test_a_sample_scored_on_a_copied_history_leaves_the_history_as_it_was() -> None:
    det, df = _trained()
    batch = det.score_frame(df)
    hist = _history(det, df.iloc[:2900])
    before_times, before_values = (a.copy() for a in hist.arrays())
    metrics = list(det.metrics)
    sample = {m: float(df.at[2900, m]) for m in metrics}
    at = df.at[2900, "timestamp"]
    scores = [
        det.score_sample(sample, timestamp=at, history=hist.copy(), threshold=0.9).score
        for _ in range(2)
    ]
    assert scores[0] == scores[1] == pytest.approx(batch.score[2900], abs=1e-9)
    times, values = hist.arrays()
    assert np.array_equal(times, before_times)
    assert np.array_equal(values, before_values, equal_nan=True)
    # The original still scores the next sample as the batch does.
    res = det.score_sample(sample, timestamp=at, history=hist, threshold=0.9)
    assert res.score == pytest.approx(batch.score[2900], abs=1e-9)
