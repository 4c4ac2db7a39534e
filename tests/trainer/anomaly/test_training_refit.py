"""A labelled history is evaluated on its last 20 % and the model put in service is then fitted
on every row: its newest stretch, the most like what comes next, is not new to it (the quick
start's host web-1 was flagged for 12 hours by a model that had never seen its last day)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from services.trainer.anomaly import artifact
from services.trainer.anomaly.features import FeatureConfig
from services.trainer.anomaly.training import HOLDOUT_SHARE, _clean_normal, train_detector
from services.trainer.synthetic.generator import SyntheticDataGenerator

LOAD = ("cpu_usage_percent", "active_requests", "response_time_p50", "response_time_p95")


def test_the_model_in_service_has_seen_the_held_out_stretch() -> None:
    history = SyntheticDataGenerator(seed=3).generate_full_training_set(
        4, start=datetime(2026, 3, 2, tzinfo=UTC)
    )
    split = int(len(history) * (1.0 - HOLDOUT_SHARE))
    # The host's normal moves up for good in the last 20 %: busier, still labelled normal.
    for metric in LOAD:
        history[metric] = history[metric].astype(float)
        history.loc[split:, metric] = history.loc[split:, metric] * 1.8
    outcome = train_detector(history, contamination=0.05, n_estimators=50)
    assert outcome.sample_count == len(history)
    assert outcome.training_end == history["timestamp"].iloc[-1].to_pydatetime()
    held_out = outcome.evaluation["held_out"]
    assert "fitted on every row" in held_out["source"]
    det = artifact.load(outcome.artifact, outcome.sha256)
    scores = det.score_frame(history).score
    newest = history.index >= split + 120  # past the look-back into the change itself
    # normal rows whose features do not reach back into a labelled anomaly
    clean = _clean_normal(history["label"].astype(str).to_numpy(), FeatureConfig().lookback)
    flagged = scores[newest & clean] >= det.fitted_threshold
    # A model fitted on the first 80 % only flags all of them (measured: 1.0 on seeds 3-5;
    # this model 0.001-0.003).
    assert float(np.mean(flagged)) < 0.02
