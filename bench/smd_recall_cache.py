"""Scores of both layers on SMD and the synthetic month, computed once and kept, so that the
rules that join them (the forest's threshold, its mapping onto the stream's scale, the
incident rule) can be compared without recomputing them (issue 9's recall on SMD).

Run: ``python -m bench.smd_recall_cache [--out /tmp/smdq_cache]``; then
``python -m bench.bench_smd_recall --cache /tmp/smdq_cache``.

Per SMD machine (``<machine>.npz``):

- ``stream``: the per-metric layer's host likelihood, streaming from the first train row
  through the test half (causal, so its first ``len(train)`` rows are what the design runs
  on the train halves see); ``metric_surprise``: each metric's surprise (0 while learning).
- ``design_forest``: the forest fitted on the first half of the train half (as
  ``bench_host_score``), scoring the whole train half; its scores on the first half are its
  training scores, so its threshold at any contamination is their quantile.
- ``test_forest_train`` / ``test_forest``: the forest fitted on the whole train half, its
  scores on the train half (training scores) and on the test half (after the history the
  service would read).
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS, load
from bench.bench_stream_smd import config_from
from services.trainer.anomaly import artifact
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.features import epoch_seconds
from services.trainer.anomaly.streaming import HostStream, StreamConfig
from services.trainer.anomaly.training import train_detector
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

CONFIG = StreamConfig()


def stream_pass(frame: pd.DataFrame, metrics: list[str]) -> tuple[np.ndarray, np.ndarray]:
    stream = HostStream(tuple(metrics), CONFIG)
    times = epoch_seconds(list(frame["timestamp"]))
    values = frame[metrics].to_numpy(dtype=float)
    host = np.zeros(len(frame))
    per = np.zeros((len(frame), len(metrics)), dtype=np.float32)
    index = {m: j for j, m in enumerate(metrics)}
    for i in range(len(frame)):
        reading = stream.update(
            float(times[i]), dict(zip(metrics, values[i].tolist(), strict=True))
        )
        host[i] = reading.score
        for m in reading.metrics:
            if m.likelihood > 0.0:
                per[i, index[m.metric]] = m.surprise
    return host, per


def smd(machine: str, out: Path, base: Path | None) -> None:
    train, test, raw = load(machine)
    if base is not None:  # a variant of the per-metric layer: the forests' scores as in base
        with np.load(base / f"{machine}.npz") as z:
            kept = {k: z[k] for k in z.files}
        stream, per = stream_pass(pd.concat([train, test], ignore_index=True), METRICS)
        kept.update(stream=stream, metric_surprise=per)
        np.savez_compressed(out / f"{machine}.npz", **kept)
        return
    half = len(train) // 2
    design = AnomalyDetector(contamination=0.001).fit(train.iloc[:half], METRICS)
    design_forest = design.score_frame(train).score
    full = AnomalyDetector(contamination=0.001).fit(train, METRICS)
    history = full.history_samples
    test_forest_train = full.score_frame(train).score
    f = full.score_frame(pd.concat([train.iloc[-history:], test], ignore_index=True))
    stream, per = stream_pass(pd.concat([train, test], ignore_index=True), METRICS)
    starts = np.array([e["start"] for e in raw])
    ends = np.array([e["end"] for e in raw])
    np.savez_compressed(
        out / f"{machine}.npz",
        n_train=len(train),
        half=half,
        stream=stream,
        metric_surprise=per,
        design_forest=design_forest,
        design_threshold=design.fitted_threshold,
        test_forest_train=test_forest_train,
        test_forest=f.score[history:],
        test_threshold=full.fitted_threshold,
        event_start=starts,
        event_end=ends,
    )


def synthetic(out: Path) -> None:
    first = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
    start = pd.Timestamp(first["timestamp"].iloc[-1]).to_pydatetime() + timedelta(minutes=1)
    second = SyntheticDataGenerator(seed=7).generate_full_training_set(30, start=start)
    outcome = train_detector(first, contamination=0.05, n_estimators=100, synthetic_seed=42)
    det = artifact.load(outcome.artifact, outcome.sha256)
    both = pd.concat([first, second], ignore_index=True)
    stream, per = stream_pass(both, list(METRIC_NAMES))
    history = det.history_samples
    f = det.score_frame(pd.concat([first.iloc[-history:], second], ignore_index=True))
    np.savez_compressed(
        out / "synthetic.npz",
        stream=stream[len(first) :],
        metric_surprise=per[len(first) :],
        forest=f.score[history:],
        threshold=det.fitted_threshold,
        labels=second["label"].astype(str).to_numpy(),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/smdq_cache"))
    ap.add_argument("--only", nargs="*", default=[*MACHINES, "synthetic"])
    ap.add_argument("--config", nargs="*", default=[], help="StreamConfig overrides (key=value)")
    ap.add_argument("--base", type=Path, default=None, help="a cache whose forests to reuse")
    args = ap.parse_args()
    global CONFIG
    CONFIG = config_from(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        t0 = time.perf_counter()
        if name == "synthetic":
            synthetic(args.out)
        else:
            smd(name, args.out, args.base)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
