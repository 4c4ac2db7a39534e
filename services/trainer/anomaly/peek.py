"""The forest's score of a host's next sample, without adding it to the host's history.

Usage: ``det.settle(history, at=t); score = score_next(det, history, row, t)``.

What ``POST /predict/anomaly`` needs: the score ``AnomalyDetector.score_sample`` would give the
sample on a copy of the settled history, computed from the history's last rows and the new
one only. No copy of the buffers, no append, no fold into a copy's shift memory and no
explanation that predict does not show: the same features, forest scores, sums and
calibration, so the same score bit for bit (tests/trainer/anomaly/test_predict_path.py).
"""

from __future__ import annotations

import numpy as np

from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.featureset import since_gap
from services.trainer.anomaly.history import SHIFT_MEMORY_RANK, RecentHistory
from shared.arrays import FloatArray


def score_next(det: AnomalyDetector, history: RecentHistory, row: FloatArray, at: float) -> float:
    """The score of ``row`` (values in ``det.metrics`` order) at ``at`` (epoch seconds, not
    before the history's newest sample) as the history's next sample, NaN where the forest
    abstains (``AnomalyDetector.whole``). The history must be settled (``det.settle``); it is
    not changed."""
    times, values = history.arrays()
    if len(times) and at < times[-1]:
        raise ValueError("the next sample cannot precede the history's newest one")
    scores = history.scores()
    if history.unfolded or bool(np.isnan(scores[-det.smoothing :]).any()):
        raise ValueError("settle the history first")
    if len(times) == history.capacity:  # the append would drop the oldest sample
        times, values, scores = times[1:], values[1:], scores[1:]
    cfg = det.extractor.config
    # ``RecentHistory.features(rows=1)`` after the append: the look-back in time before the
    # new sample, and one sample before it for the forward fill; the gaps over the buffer.
    since = since_gap(cfg.slots(np.append(times, at)))[-1:]
    if not det.whole(since)[0]:
        return float("nan")  # a gap in the look-back or smoothing: the forest abstains
    horizon = at - (cfg.lookback + 1) * cfg.interval_s
    first = max(0, int(np.searchsorted(times, horizon, side="left")) - 1)
    feats = det.extractor.compute(
        np.append(times[first:], at), np.vstack([values[first:], row[None, :]]), tail=1, gaps=since
    )
    # The newest ``smoothing`` raw scores with the new one, averaged over the samples since
    # the last gap longer than the look-back (``RecentHistory.run_length``).
    cached = np.append(scores, -det.forest_scores(feats.matrix))[-det.smoothing :]
    limit = len(cached)
    slots = cfg.slots(np.append(times[-limit:], at))
    gaps = np.flatnonzero(np.diff(slots) > cfg.lookback)
    run = min(limit, len(slots) - 1 - int(gaps[-1])) if len(gaps) else min(limit, len(times) + 1)
    in_run = cached[-run:]
    forest_anom = np.array([sum(in_run.tolist()) / len(in_run)])
    ref = history.memory.reference(feats.hour, np.abs(feats.deviation), SHIFT_MEMORY_RANK)
    return float(det._combine(feats, forest_anom, ref[-1:])[0])
