"""The forest's correlation view: metrics that usually move together parting ways are flagged
even when each stays inside its own usual range; the view is stored with the model, and
versions stored before it load and score as they did."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from services.trainer.anomaly import artifact
from services.trainer.anomaly.correlation import CorrelationView
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import incident_rows
from services.trainer.anomaly.features import frame_times

N = 4000


def _host(n: int = N, seed: int = 0) -> pd.DataFrame:
    """CPU follows the load with noise; memory moves on its own."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-03-01", periods=n, freq="1min", tz="UTC")
    load = 50 + 30 * np.sin(2 * np.pi * np.arange(n) / 1440) + 2 * rng.standard_normal(n)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "load_average": load / 10,
            "cpu_usage_percent": load + rng.standard_normal(n),
            "memory_usage_percent": 60 + 3 * rng.standard_normal(n),
        }
    )


def _parted(frame: pd.DataFrame, start: int, length: int) -> pd.DataFrame:
    """From ``start``, CPU stays where the load was an hour and a half before it (inside its
    own range, no jump) while the load goes on: the two part ways slowly."""
    out = frame.copy()
    cpu = out["cpu_usage_percent"].to_numpy().copy()
    cpu[start : start + length] = cpu[start - 90 : start - 90 + length]
    out["cpu_usage_percent"] = cpu
    return out


@lru_cache(maxsize=2)
def _fitted(correlation: float) -> AnomalyDetector:
    return AnomalyDetector(contamination=0.003, n_estimators=50, correlation=correlation).fit(
        _host()
    )


def test_the_view_scores_a_broken_relation_above_everything_it_was_trained_on() -> None:
    frame = _host()
    z = np.column_stack(
        [(frame[c] - frame[c].median()) / frame[c].std() for c in frame.columns[1:]]
    )
    view = CorrelationView.fit(z[:3000], keep=0.99)
    assert view is not None and view.basis.shape[1] < z.shape[1]
    parted = _parted(frame, 3500, 60)
    zp = np.column_stack(
        [(parted[c] - frame[c].median()) / frame[c].std() for c in frame.columns[1:]]
    )
    trained_max = view.raw(z[:3000]).max()
    assert np.median(view.raw(zp[3530:3560])) > 3 * trained_max  # well into the parting
    assert np.median(view.raw(z[3000:])) < np.quantile(view.raw(z[:3000]), 0.99)


def test_no_residual_left_means_no_view() -> None:
    z = np.random.default_rng(0).standard_normal((500, 1))
    assert CorrelationView.fit(z) is None  # one metric has no relation to break
    with pytest.raises(ValueError, match="keep"):
        CorrelationView.fit(z, keep=1.0)


def test_a_host_whose_metrics_part_ways_is_flagged_throughout_only_with_the_view() -> None:
    frame = _parted(_host(N + 600), N + 300, 120)
    with_view, without = _fitted(0.99), _fitted(0.0)
    flagged = {}
    for name, det in (("with", with_view), ("without", without)):
        scores = det.score_frame(frame).score[N:]
        flagged[name] = incident_rows(scores >= det.fitted_threshold, 3)
    window = slice(300 + 30, 300 + 120)  # the last 90 minutes of the parting
    assert flagged["with"][window].sum() >= 80
    assert flagged["without"][window].sum() <= 30  # the jump and forest views lose it
    # the normal stretch before the parting is no noisier with the view
    assert flagged["with"][:300].sum() <= flagged["without"][:300].sum() + 3


def test_the_view_is_stored_with_the_model_and_scores_the_same_after_loading() -> None:
    det = _fitted(0.99)
    blob = artifact.dump(det)
    loaded = artifact.load(blob, artifact.sha256(blob))
    assert loaded.corr is not None and loaded.correlation == 0.99
    frame = _parted(_host(N + 600), N + 300, 120)
    np.testing.assert_array_equal(loaded.score_frame(frame).score, det.score_frame(frame).score)


def test_a_version_stored_without_the_view_loads_and_scores_as_before() -> None:
    det = _fitted(0.0)
    blob = artifact.dump(det)
    loaded = artifact.load(blob, artifact.sha256(blob))
    assert loaded.corr is None and loaded.cal_corr is None
    frame = _host(N + 200)
    np.testing.assert_array_equal(loaded.score_frame(frame).score, det.score_frame(frame).score)


def test_one_sample_at_a_time_scores_as_the_batch_with_the_view() -> None:
    det = _fitted(0.99)
    frame = _parted(_host(N + 120), N + 30, 60)
    batch = det.score_frame(frame).score
    times = frame_times(frame)
    values = frame[list(det.metrics)].to_numpy(dtype=float)
    history = det.seeded_history(times[:N], values[:N])
    online = [
        det.score_sample(
            dict(zip(det.metrics, values[i], strict=True)),
            timestamp=times[i],
            history=history,
            threshold=det.fitted_threshold,
        ).score
        for i in range(N, N + 120)
    ]
    np.testing.assert_allclose(online, batch[N:], rtol=0, atol=1e-9)
