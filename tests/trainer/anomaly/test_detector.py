"""Behaviour of the anomaly detector: fast path, calibration, feedback, storage, quality."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.trainer.detector import AnomalyDetector, Calibrator, pot_threshold, severity
from services.trainer.evaluation import (
    Event,
    attribution_hits,
    detection_counts,
    incident_rows,
)

SMD = Path(__file__).resolve().parents[1] / "data" / "smd"


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


@lru_cache(maxsize=1)
def _trained() -> tuple[AnomalyDetector, pd.DataFrame]:
    df = _frame()
    return AnomalyDetector(n_estimators=50).fit(df), df


def test_fast_path_equals_sklearn() -> None:
    det, df = _trained()
    assert det.forest is not None and det.flat is not None
    x = det._standardise(det.extractor.transform(df).matrix)
    extreme = x[:20] * 50.0  # outside the training range in every direction
    for rows in (x[:300], extreme):
        np.testing.assert_allclose(
            det.flat.score_samples(rows), det.forest.score_samples(rows), atol=1e-9, rtol=0
        )


def test_online_score_equals_batch_score() -> None:
    det, df = _trained()
    batch = det.score_frame(df)
    hist = det.history_from(df.iloc[:2900])  # the look-back and 24 h of shift memory
    assert det.history_samples < 2900
    metrics = list(det.metrics)
    for i in range(2900, 2950):
        res = det.score_sample(
            {m: float(df.at[i, m]) for m in metrics}, timestamp=df.at[i, "timestamp"], history=hist
        )
        assert res.score == pytest.approx(batch.score[i], abs=1e-9)
        assert res.is_anomaly == bool(batch.is_anomaly[i])


def test_scores_are_calibrated_and_threshold_matches_contamination() -> None:
    det, df = _trained()
    scores = det.score_frame(df).score
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.mean(scores >= det.threshold) == pytest.approx(det.contamination, abs=0.01)
    assert det.threshold == pytest.approx(1 - det.contamination, abs=0.01)


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
    hist.extend_frame(df.iloc[-200:])
    ts = df["timestamp"].iloc[-1]
    res = None
    for k in range(1, 6):
        sample = {"cpu_usage_percent": 99.0, "memory_usage_percent": 60.0, "error_rate": 0.01}
        res = det.score_sample(sample, timestamp=ts + pd.Timedelta(minutes=k), history=hist)
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
    res = det.score_sample({"cpu_usage_percent": 41.0}, timestamp=ts, history=hist)
    assert np.isfinite(res.score)
    assert det.training_medians["memory_usage_percent"] == pytest.approx(60, abs=0.5)


def test_severity_cutoffs() -> None:
    assert [severity(s) for s in (0.5, 0.95, 0.99, 0.999)] == ["low", "medium", "high", "critical"]


def test_threshold_feedback_moves_in_the_right_direction() -> None:
    det = AnomalyDetector()
    det.threshold = 0.95
    up = det.adjust_threshold("false_positive", 0.97)
    assert up > 0 and det.threshold > 0.95
    before = det.threshold
    down = det.adjust_threshold("true_positive", 0.90)
    assert down < 0 and det.threshold < before
    assert det.adjust_threshold("false_positive", 0.3) == 0.0  # not flagged anyway
    with pytest.raises(ValueError):
        det.adjust_threshold("maybe", 0.9)  # type: ignore[arg-type]


def test_serialization_roundtrip_and_checksum() -> None:
    det, df = _trained()
    blob = det.to_bytes()
    digest = AnomalyDetector.sha256(blob)
    loaded = AnomalyDetector.from_bytes(blob, digest)
    np.testing.assert_array_equal(loaded.score_frame(df).score, det.score_frame(df).score)
    assert loaded.threshold == det.threshold
    assert loaded.training_medians == det.training_medians
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        AnomalyDetector.from_bytes(bytes(tampered), digest)


def test_pot_threshold_lands_near_the_analytic_tail_quantile() -> None:
    from scipy.stats import expon, genpareto

    rng = np.random.default_rng(11)
    # Heavy tail (GPD shape 0.2) and light tail (exponential, shape 0); the excesses over
    # any threshold are GPD again, so POT should recover the analytic quantile.
    for dist in (genpareto(c=0.2, scale=1.0), expon()):
        sample = dist.rvs(size=50_000, random_state=rng)
        for risk in (1e-3, 1e-4):
            truth = float(dist.isf(risk))
            got = pot_threshold(sample, level=0.98, risk=risk)
            assert got == pytest.approx(truth, rel=0.15), (dist.dist.name, risk, got, truth)
    with pytest.raises(ValueError):
        pot_threshold(np.arange(100.0), level=0.98, risk=0.05)  # risk beyond the init level


def test_pot_detector_threshold_and_storage() -> None:
    det, df = _trained()
    pot = AnomalyDetector(n_estimators=50, threshold_method="pot", pot_risk=1e-3).fit(df)
    # Calibrated scores are uniform on training, so POT lands near the 1 - risk quantile.
    assert pot.threshold == pytest.approx(0.999, abs=0.002)
    assert pot.threshold > det.threshold  # default contamination 0.05: quantile 0.95
    blob = pot.to_bytes()
    loaded = AnomalyDetector.from_bytes(blob, AnomalyDetector.sha256(blob))
    assert (loaded.threshold_method, loaded.pot_level, loaded.pot_risk) == ("pot", 0.98, 1e-3)
    assert loaded.threshold == pot.threshold
    np.testing.assert_array_equal(loaded.score_frame(df).is_anomaly, pot.score_frame(df).is_anomaly)
    with pytest.raises(ValueError):
        AnomalyDetector(threshold_method="mad")  # type: ignore[arg-type]


def test_models_stored_before_pot_load_as_quantile() -> None:
    import io

    det, _ = _trained()
    with np.load(io.BytesIO(det.to_bytes()), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays["config"].tobytes().decode())
    for key in ("threshold_method", "pot_level", "pot_risk"):
        del config[key]
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    old = buf.getvalue()
    loaded = AnomalyDetector.from_bytes(old, AnomalyDetector.sha256(old))
    assert loaded.threshold_method == "quantile"
    assert loaded.threshold == det.threshold


def test_invalid_contamination_is_rejected() -> None:
    for c in (0.0, 0.6):
        with pytest.raises(ValueError):
            AnomalyDetector(contamination=c)


@lru_cache(maxsize=1)
def _service_evaluation() -> dict[str, Any]:
    """What the trainer stores for a model trained on a synthetic month (seed 42)."""
    from services.trainer.synthetic import SyntheticDataGenerator
    from services.trainer.training import train_detector

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
            tops += det.top_metrics(scored.features, np.array([history + e["start"] + hit[0]]))
            truths.append(e["metrics"])
    attr = attribution_hits(tops, truths, n_metrics=38, k=3)

    # Measured (as incidents vs the baseline's raw flags): F1 0.35 vs 0.20, event recall
    # 0.90 vs 0.24, event precision 0.73 vs 0.08, hit@3 1.00.
    assert ours.f1 >= 0.3 and ours.f1 > theirs.f1 + 0.1
    assert ours.event_recall >= 0.85 and ours.event_recall > theirs.event_recall + 0.4
    assert ours.event_precision >= 0.5 and ours.event_precision > theirs.event_precision + 0.3
    assert attr.hit_rate >= 0.85 and attr.hit_rate > attr.chance + 0.3


def test_median_baseline_model_roundtrip_and_old_models_load_as_mean() -> None:
    import io

    from services.trainer.features import FeatureConfig

    df = _frame(1500)
    det = AnomalyDetector(n_estimators=20, feature_config=FeatureConfig(baseline_stat="median"))
    det.fit(df)
    blob = det.to_bytes()
    loaded = AnomalyDetector.from_bytes(blob, AnomalyDetector.sha256(blob))
    assert loaded.extractor.config.baseline_stat == "median"
    np.testing.assert_array_equal(loaded.score_frame(df).score, det.score_frame(df).score)

    mean_det, _ = _trained()
    with np.load(io.BytesIO(mean_det.to_bytes()), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays["config"].tobytes().decode())
    del config["feature_config"]["baseline_stat"]  # stored before the option existed
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    old = buf.getvalue()
    loaded = AnomalyDetector.from_bytes(old, AnomalyDetector.sha256(old))
    assert loaded.extractor.config.baseline_stat == "mean"


def test_trailing_peak_matches_a_direct_count() -> None:
    from services.trainer.features import trailing_peak

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
    from services.trainer.features import ShiftMemory, trailing_peak

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
    train = df.iloc[: 4 * 1440]
    with_memory = AnomalyDetector(n_estimators=50, contamination=0.01).fit(train)
    without = AnomalyDetector(n_estimators=50, contamination=0.01, shift_memory_hours=0).fit(train)
    a, b = with_memory.score_frame(df).score, without.score_frame(df).score
    repeat = slice(5 * 1440 + 64, 5 * 1440 + 75)  # the 13th 16-point jump within a day
    extreme = slice(5 * 1440 + 304, 5 * 1440 + 315)
    first = slice(4 * 1440 + 4, 4 * 1440 + 15)  # the first jump of the volatile day
    assert b[repeat].max() >= without.threshold  # without memory it alarms yet again
    assert a[repeat].max() < b[repeat].max()
    assert a[extreme].max() >= with_memory.threshold  # far beyond the day's peaks: alarms
    assert a[first].max() >= with_memory.threshold and b[first].max() >= without.threshold
    # The shift part itself: beyond its reference without memory, within it with memory.
    feats = with_memory.extractor.transform(df)
    ref = with_memory._batch_memory_ref(feats)
    assert ref is not None
    cpu = with_memory.metrics.index("cpu_usage_percent")
    dev = np.abs(feats.deviation[repeat, cpu])
    assert (dev / with_memory.dev_ref[cpu]).max() > 1.0
    assert (dev / np.maximum(with_memory.dev_ref[cpu], ref[repeat, cpu])).max() <= 1.0
    ext = np.abs(feats.deviation[extreme, cpu])
    assert (ext / np.maximum(with_memory.dev_ref[cpu], ref[extreme, cpu])).max() > 2.0


def test_shift_memory_is_stored_and_old_models_load_without_it() -> None:
    import io

    det, df = _trained()
    blob = det.to_bytes()
    loaded = AnomalyDetector.from_bytes(blob, AnomalyDetector.sha256(blob))
    assert loaded.shift_memory_hours == det.shift_memory_hours == 24
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays["config"].tobytes().decode())
    del config["shift_memory_hours"]
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    old = AnomalyDetector.from_bytes(buf.getvalue(), AnomalyDetector.sha256(buf.getvalue()))
    assert old.shift_memory_hours == 0 and old.new_history().memory is None
    with pytest.raises(ValueError):
        AnomalyDetector(shift_memory_hours=-1)


def test_a_late_sample_is_scored_against_the_memory_of_its_own_time() -> None:
    det, df = _trained()
    hist = det.history_from(df.iloc[:2900])
    metrics = list(det.metrics)
    late_at = 2850
    copy = hist.copy_until(float(pd.Timestamp(df.at[late_at - 1, "timestamp"]).timestamp()))
    assert copy.memory is not None and hist.memory is not None
    assert copy.memory.hours.max() <= hist.memory.hours.max()
    res = det.score_sample(
        {m: float(df.at[late_at, m]) for m in metrics},
        timestamp=df.at[late_at, "timestamp"],
        history=copy,
    )
    assert res.score == pytest.approx(det.score_frame(df).score[late_at], abs=1e-9)
    assert len(hist) == hist.capacity  # the original history is untouched


def test_a_lone_extreme_sample_scores_high_but_cannot_open_an_incident() -> None:
    df = _frame(n=4 * 1440, seed=8)
    train, live = df.iloc[: 3 * 1440], df.iloc[3 * 1440 :].reset_index(drop=True)
    det = AnomalyDetector(n_estimators=50, contamination=0.01).fit(train)
    no_jump = AnomalyDetector(n_estimators=50, contamination=0.01, jump_view=False).fit(train)
    spiked = live.copy()
    spiked.loc[600, "cpu_usage_percent"] = 99.0  # one sample, every other metric normal
    scores = det.score_frame(spiked)
    assert scores.is_anomaly[600] and scores.score[600] >= 0.999
    assert no_jump.score_frame(spiked).score[600] < scores.score[600]
    # Above the threshold on that sample alone, not three in a row: no incident.
    assert not incident_rows(scores.is_anomaly, 3)[595:610].any()
    # The same jump held for five samples is an incident.
    held = live.copy()
    held.loc[600:604, "cpu_usage_percent"] = 99.0
    assert incident_rows(det.score_frame(held).is_anomaly, 3)[602:606].any()


def test_options_are_stored_and_models_before_them_load_as_trained() -> None:
    import io

    from services.trainer.features import FeatureConfig

    df = _frame(1500)
    det = AnomalyDetector(n_estimators=20, feature_config=FeatureConfig(level_median=3))
    det.fit(df)
    blob = det.to_bytes()
    loaded = AnomalyDetector.from_bytes(blob, AnomalyDetector.sha256(blob))
    assert loaded.extractor.config.level_median == 3 and loaded.jump_view
    np.testing.assert_array_equal(loaded.score_frame(df).score, det.score_frame(df).score)

    old_style = AnomalyDetector(n_estimators=20, jump_view=False).fit(df)
    with np.load(io.BytesIO(old_style.to_bytes()), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert "cal_jump_knots" not in arrays  # a model without the jump view stores none
    config = json.loads(arrays["config"].tobytes().decode())
    del config["feature_config"]["level_median"]  # stored before the option existed
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    old = buf.getvalue()
    loaded = AnomalyDetector.from_bytes(old, AnomalyDetector.sha256(old))
    assert loaded.extractor.config.level_median == 0 and not loaded.jump_view
    np.testing.assert_array_equal(loaded.score_frame(df).score, old_style.score_frame(df).score)


def test_threaded_batch_scoring_equals_one_thread_bit_for_bit() -> None:
    import services.trainer.detector as detector_module

    det, _ = _trained()
    df = _frame(n=9000, seed=2)
    before = detector_module._SCORING_THREADS
    try:
        detector_module.set_scoring_threads(2)
        threaded = det.score_frame(df)
        detector_module.set_scoring_threads(1)
        single = det.score_frame(df)
    finally:
        detector_module.set_scoring_threads(before)
    np.testing.assert_array_equal(threaded.forest_score, single.forest_score)
    np.testing.assert_array_equal(threaded.score, single.score)
