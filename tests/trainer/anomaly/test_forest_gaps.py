"""A host's forest abstains where a gap in its samples lies within its look-back and smoothing:
minutes filled forward across an outage are not the host's behaviour, and the forest found
them unusual (issue 9: no false alarm after a collector outage). Real detectors, the batch,
the scoring loop's and the per-sample paths."""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer.anomaly.featureset import since_gap
from services.trainer.anomaly.hostscore import HostForest, combine, score_host
from services.trainer.anomaly.streaming import HostStream
from tests.trainer.anomaly.test_detector import _arrays, _history, _trained

INF = np.inf


def test_a_gap_is_a_step_of_more_than_two_slots_or_twice_the_usual_one() -> None:
    # 2 -> 5 skips two slots: a gap; 6 -> 8 skips one (a late sample): not a gap
    out = since_gap(np.array([0, 1, 2, 5, 6, 8, 9]))
    np.testing.assert_array_equal(out, [INF, INF, INF, 0, 1, 3, 4])
    every_five = np.arange(0, 100, 5)  # a host sending every 5 minutes has no gap
    assert np.isinf(since_gap(every_five)).all()
    outage = since_gap(np.concatenate([every_five, np.arange(150, 200, 5)]))  # 55 > 2 x 5
    assert np.isinf(outage[:20]).all()
    np.testing.assert_array_equal(outage[20:], np.arange(0, 50, 5))
    assert np.isinf(since_gap(np.array([7]))).all()


def _holed(gap: int, cut: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test frame's times and values with ``gap`` minutes removed from row ``cut`` on, and
    the rows kept."""
    det, df = _trained()
    times, values = _arrays(det, df)
    keep = np.ones(len(times), dtype=bool)
    keep[cut : cut + gap] = False
    return times[keep], values[keep], keep


@pytest.mark.parametrize("gap", [3, 20, 45, 120])
def test_the_batch_forest_abstains_for_its_look_back_and_smoothing_after_a_gap(gap: int) -> None:
    det, df = _trained()
    times, values = _arrays(det, df)
    full = det.score_features(det.extractor.transform_arrays(times, values), threshold=0.9)
    assert np.isfinite(full.score).all()  # samples a minute apart: it always speaks
    t, v, _ = _holed(gap)
    holed = det.score_features(det.extractor.transform_arrays(t, v), threshold=0.9)
    np.testing.assert_array_equal(holed.score[:2000], full.score[:2000])
    since = (t[2000:] - t[2000]) / 60.0
    span = det.extractor.config.lookback + det.smoothing
    assert np.isnan(holed.score[2000:][since < span]).all()
    assert np.isfinite(holed.score[2000:][since >= span]).all()
    assert not holed.is_anomaly[2000:][since < span].any()


def test_one_missed_minute_is_not_a_gap() -> None:
    det, _ = _trained()
    t, v, _ = _holed(1)
    assert np.isfinite(
        det.score_features(det.extractor.transform_arrays(t, v), threshold=0.9).score
    ).all()


def test_training_leaves_out_the_rows_it_would_abstain_on() -> None:
    det, df = _trained()
    t, v, keep = _holed(30)
    holed = type(det)(n_estimators=50).fit(df[keep].reset_index(drop=True))
    # the rows after the gap are not in its training rows, so fewer than the frame's
    span = det.extractor.config.lookback + det.smoothing
    assert holed.n_train == len(t) - span
    assert det.n_train == len(df)


def test_the_scoring_loop_and_predict_paths_abstain_as_the_batch_does() -> None:
    det, df = _trained()
    t, v, _ = _holed(45)
    batch = det.score_features(det.extractor.transform_arrays(t, v), threshold=0.9).score
    # the scoring loop's path: a host's stream and forest, new rows after the gap
    stream = HostStream(det.metrics)
    hist = _history(det, df.iloc[:1900])
    for i in range(1900):
        stream.update(float(t[i]), dict(zip(det.metrics, v[i].tolist(), strict=True)))
    forest = HostForest(det, hist, list(range(len(det.metrics))), det.fitted_threshold)
    out = score_host(stream, t[1900:2200], v[1900:2200], forest=forest, threshold=0.999)
    got = [np.nan if s.forest_score is None else s.forest_score for s in out.scored]
    np.testing.assert_array_equal(got, batch[1900:2200])
    for s in out.scored:  # where the forest abstains, the host's score is the stream's
        if s.forest_score is None:
            assert s.score == s.stream_score
    # one sample at a time (``score_sample``), the predict path's long way
    hist = _history(det, df.iloc[:1990])
    one_by_one = [
        det.score_sample(
            dict(zip(det.metrics, v[i].tolist(), strict=True)),
            timestamp=float(t[i]),
            history=hist,
            threshold=0.9,
        ).score
        for i in range(1990, 2100)
    ]
    np.testing.assert_allclose(one_by_one, batch[1990:2100], rtol=0, atol=1e-12)  # NaN = NaN
    span = det.extractor.config.lookback + det.smoothing
    assert np.isnan(one_by_one[10:]).sum() == span  # from the first sample after the gap


def test_an_abstaining_forest_leaves_the_host_score_to_the_per_metric_layer() -> None:
    assert combine(0.42, float("nan"), 0.99, 0.999) == 0.42
    assert combine(0.42, None, 0.99, 0.999) == 0.42
    assert combine(0.42, 0.9999, 0.99, 0.999) > 0.999
