"""The README's quick start trains host web-1's detector on three synthetic days (seed 7) that
end now; both its layers, replayed over that history as the scoring loop scores it, open
incidents only on the labelled scenarios and the look-back tail after each (a model fitted
on the first 80 % alone held one incident over 12 hours of web-1's normal day)."""

from __future__ import annotations

import numpy as np

from services.trainer.anomaly import artifact
from services.trainer.anomaly.budget import replay_stream
from services.trainer.anomaly.evaluation import incident_rows, runs
from services.trainer.anomaly.features import FeatureConfig, frame_times
from services.trainer.anomaly.hostscore import combine_all
from services.trainer.anomaly.training import DEFAULT_THRESHOLD, train_detector
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

RESOLVE = 3  # samples below the threshold that resolve an incident (ML_ANOMALY_CONSECUTIVE)


def test_web1_of_the_quick_start_raises_incidents_only_on_its_scenarios() -> None:
    history = SyntheticDataGenerator(seed=7).generate_full_training_set(3)  # as the README's
    outcome = train_detector(history, contamination=0.05, n_estimators=100)  # {"host": "web-1"}
    det = artifact.load(outcome.artifact, outcome.sha256)
    forest = det.score_frame(history).score
    values = history.reindex(columns=list(METRIC_NAMES)).to_numpy(float)
    stream = replay_stream(frame_times(history), values, METRIC_NAMES)
    flags = combine_all(stream, forest, det.fitted_threshold, DEFAULT_THRESHOLD)
    incidents = incident_rows(flags >= DEFAULT_THRESHOLD, 3)
    labelled = (history["label"] != "normal").to_numpy()
    # A scenario's rows and the rows whose features still reach back into it.
    tail = FeatureConfig().lookback + det.smoothing + RESOLVE
    reach = np.convolve(labelled.astype(int), np.ones(tail + 1, dtype=int))[: len(history)] > 0
    found = runs(incidents)
    assert found, "the scenarios raise incidents"
    outside = [(a, b) for a, b in found if not reach[a : b + 1].all()]
    assert not outside, [(str(history["timestamp"].iloc[a]), b - a + 1) for a, b in outside]
