"""The failure model: time split, threshold for a precision, artifact round trip, explanations."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from services.trainer.failure import artifact
from services.trainer.failure.definition import Condition, FailureDefinition
from services.trainer.failure.evaluation import SignalReport, score_signal, warning_signal
from services.trainer.failure.features import WORDS, FeatureSpec, batch_features
from services.trainer.failure.model import (
    NEVER,
    FailureModel,
    TrainParams,
    history_from_frame,
    prepare,
    train,
    wilson_lower,
)
from services.trainer.synthetic.generator import SyntheticDataGenerator

PARAMS = TrainParams(num_boost_round=40, early_stopping=10, validation_share=0.4)


@pytest.fixture(scope="module")
def month():
    df = SyntheticDataGenerator(seed=5).generate_full_training_set(
        12, start=datetime(2026, 3, 2, tzinfo=UTC)
    )
    return df, history_from_frame(df, host="h1")


@pytest.fixture(scope="module")
def model(month) -> FailureModel:
    return train([month[1]], params=PARAMS)


def test_training_rows_end_a_horizon_before_the_validation_period(month, model) -> None:
    hist = month[1]
    data = prepare([hist], model.definition, model.spec, PARAMS.validation_share)
    cutoff = hist.times[data.is_valid][0]
    for h in model.definition.horizons_min:
        usable = ~data.is_valid & data.train_ok[h]
        assert hist.times[usable].max() + h * 60 < cutoff
    assert [h.horizon_min for h in model.horizons] == [15, 30, 60]


def test_the_threshold_reaches_the_stated_precision_on_validation(month, model) -> None:
    hist = month[1]
    data = prepare([hist], model.definition, model.spec, PARAMS.validation_share)
    seg = data.segments[0]
    reached = [h for h in model.horizons if h.validation["target_reached"]]
    assert reached, [h.validation for h in model.horizons]
    for h in reached:
        p = h.booster.predict(data.x[seg.lo : seg.hi])
        rows = warning_signal(p >= h.threshold, seg.state, k=PARAMS.consecutive)
        kinds = ["failure"] * len(seg.onsets)
        report: SignalReport = score_signal(
            seg.times, seg.state, seg.onsets, kinds, rows, horizon_s=h.horizon_min * 60.0
        )
        assert report.warnings > 0
        precision = report.true_warnings / report.warnings
        assert precision >= PARAMS.precision_target
        bound = wilson_lower(report.true_warnings, report.warnings, PARAMS.confidence_z)
        assert bound >= PARAMS.precision_target
        assert bound == pytest.approx(h.validation["precision_lower_bound"])


def test_the_artifact_round_trips_with_its_checksum(month, model) -> None:
    blob = artifact.dump(model)
    assert b"tree\nversion=" in blob.replace(b"\\n", b"\n")  # LightGBM's own text format
    loaded = artifact.load(blob, hashlib.sha256(blob).hexdigest())
    hist = month[1]
    window = slice(3000, 3200)
    p0 = model.predict_window(hist.times[window], hist.values[window])
    p1 = loaded.predict_window(hist.times[window], hist.values[window])
    assert p0 == p1
    assert loaded.definition == model.definition and loaded.spec == model.spec
    assert artifact.dump(loaded) == blob


def test_a_tampered_artifact_is_refused(model) -> None:
    blob = artifact.dump(model)
    checksum = artifact.sha256(blob)
    tampered = blob.replace(b'"threshold":', b'"threshold": ', 1)
    with pytest.raises(ValueError, match="checksum mismatch"):
        artifact.load(tampered, checksum)


def test_another_format_is_refused_by_name(model) -> None:
    doc = orjson.loads(artifact.dump(model))
    doc["format"] = "npz+skops"
    other = orjson.dumps(doc)
    with pytest.raises(ValueError, match="'npz\\+skops' is not 'lightgbm-text\\+json'"):
        artifact.load(other, artifact.sha256(other))
    doc["format"], doc["format_version"] = artifact.ARTIFACT_FORMAT, 99
    newer = orjson.dumps(doc)
    with pytest.raises(ValueError, match="format version 99"):
        artifact.load(newer, artifact.sha256(newer))
    npz = b"PK\x03\x04 not json"
    with pytest.raises(ValueError, match="not JSON"):
        artifact.load(npz, artifact.sha256(npz))


def test_a_warning_before_a_memory_restart_is_explained_in_words(month, model) -> None:
    df, hist = month
    labels = df["label"].to_numpy()
    state = model.definition.state(hist.times, hist.values, hist.metrics)
    restarts = np.flatnonzero(state[1:] & ~state[:-1]) + 1
    leak_end = next(int(i) for i in restarts if labels[i] == "memory_leak")
    i = leak_end - 20  # 20 minutes before the restart
    p = model.predict_window(hist.times[i - 61 : i + 1], hist.values[i - 61 : i + 1], explain=3)
    assert max(h.probability for h in p.horizons) > 0.5
    assert p.contributions
    assert all(c.contribution > 0 for c in p.contributions)
    for c in p.contributions:
        # named in the metric's words ("p95 latency rising 5.3 ms/min ..."), never the raw id
        assert any(c.text.startswith(w + " ") for w in WORDS.values()), c.text
        assert c.feature.split(":")[0] not in c.text


def test_a_model_that_cannot_reach_the_precision_warns_of_nothing(month) -> None:
    hist = month[1]
    # error storms only: nothing in the generator's data precedes them
    storms = FailureDefinition(conditions=(Condition("storm", "error_rate", "above", 0.1, 120.0),))
    weak = train([hist], definition=storms, params=PARAMS)
    assert all(not h.validation["target_reached"] for h in weak.horizons)
    assert all(h.threshold == NEVER for h in weak.horizons)
    p = weak.predict_window(hist.times[:500], hist.values[:500])
    assert not any(h.warning for h in p.horizons)


def test_one_row_reads_what_booster_predict_reads(month, model) -> None:
    hist = month[1]
    x = batch_features(model.spec, hist.times[:3000], hist.values[:3000])
    batch = model.predict_features(x)
    for i in (100, 1500, 2999):
        p = model.predict_row(x[i])
        for h in p.horizons:
            assert h.probability == batch[h.horizon_min][i]
    loaded = artifact.load(artifact.dump(model), artifact.sha256(artifact.dump(model)))
    assert loaded.predict_row(x[1500]) == model.predict_row(x[1500])
    with pytest.raises(ValueError, match=f"a row of {len(model.spec.names)} features"):
        model.horizons[0].row(x[0, :10])


def test_a_version_1_artifact_loads_with_the_features_it_was_trained_on(month) -> None:
    hist = month[1]
    definition = FailureDefinition()
    spec = FeatureSpec.for_metrics(hist.metrics, definition.conditions, breach=())
    before = train([hist], spec=spec, params=PARAMS)
    doc = orjson.loads(artifact.dump(before))
    # what the build before the breach features stored: version 1, no "breach" in the spec
    doc["format_version"] = 1
    del doc["features"]["breach"]
    v1 = orjson.dumps(doc)
    loaded = artifact.load(v1, artifact.sha256(v1))
    assert loaded.spec == spec and len(loaded.spec.names) == 128
    window = slice(3000, 3200)
    assert loaded.predict_window(hist.times[window], hist.values[window]) == (
        before.predict_window(hist.times[window], hist.values[window])
    )
    # a version 1 document claiming features this build would compute differently is refused
    doc["feature_names"] = [*doc["feature_names"], "cpu_usage_percent:eta_15m_to_85"]
    odd = orjson.dumps(doc)
    with pytest.raises(ValueError, match="feature names differ"):
        artifact.load(odd, artifact.sha256(odd))
