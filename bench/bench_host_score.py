"""How a host's score combines its per-metric streaming detectors with its own forest.

Run: ``python -m bench.bench_host_score [--threshold 0.999] [--contamination 0.003]``.
Default: the scheduled training's rule, each host's forest contamination chosen from its own
false-incident rate (``budget.choose_contamination`` at ``forests.INCIDENT_BUDGET`` a day,
on the history the forest is fitted on); ``--contamination C``: one constant for every host.

Three ways, each as the scoring loop would count incidents (``incident_rows``, 3 in a row):
``stream`` (the per-metric layer alone), ``max`` (the largest of the per-metric likelihood,
the forest's score mapped onto the same scale and the two joined by Fisher's method:
``hostscore.combine``, what the service runs)
and ``confirm`` (the smaller: the forest must agree with the per-metric layer).

Chosen on (1) the SMD train halves: the forest fitted on the first half of each train half,
the detectors streaming from its first row, false incidents per host-day counted on the
second half (clean by construction); and (2) synthetic data: the quick start's month (seed
42) trains the forest and warms the detectors, the next month of seed 7 is scored (per-
scenario event recall, event precision). The SMD test halves (forest on the whole train half,
detectors streaming through train then test) are reported as measured, never chosen on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS, load
from bench.bench_stream_smd import config_from
from services.trainer.anomaly import artifact
from services.trainer.anomaly.budget import choose_contamination
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    detection_counts,
    evaluate_labels,
    incident_rows,
    runs,
)
from services.trainer.anomaly.features import epoch_seconds
from services.trainer.anomaly.forests import INCIDENT_BUDGET
from services.trainer.anomaly.hostscore import combine_all, forest_on_stream_scale
from services.trainer.anomaly.streaming import HostStream, StreamConfig
from services.trainer.anomaly.training import train_detector
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

MODES = ("stream", "max", "confirm")
CONSECUTIVE = 3


def stream_scores(
    frame: pd.DataFrame, metrics: Sequence[str], config: StreamConfig | None = None
) -> np.ndarray:
    stream = HostStream(tuple(metrics), config or StreamConfig())
    times = epoch_seconds(list(frame["timestamp"]))
    values = frame[list(metrics)].to_numpy(dtype=float)
    out = np.zeros(len(frame))
    for i in range(len(frame)):
        row = dict(zip(metrics, values[i].tolist(), strict=True))
        out[i] = stream.update(float(times[i]), row).score
    return out


def combined(stream: np.ndarray, forest: np.ndarray, f_thr: float, thr: float) -> dict[str, Any]:
    mapped = np.array([forest_on_stream_scale(float(f), f_thr, thr) for f in forest])
    return {
        "stream": stream >= thr,
        "max": combine_all(stream, forest, f_thr, thr) >= thr,
        "confirm": np.minimum(stream, mapped) >= thr,
    }


def false_incidents(flags: np.ndarray) -> int:
    return len(runs(incident_rows(flags, CONSECUTIVE)))


def host_contamination(
    history: pd.DataFrame, stream: np.ndarray, thr: float, contamination: float | None
) -> float:
    """The constant, or the service's per-host choice on the forest's own history."""
    if contamination is not None:
        return contamination
    choice = choose_contamination(
        history, METRICS, stream, threshold=thr, consecutive=CONSECUTIVE, budget=INCIDENT_BUDGET
    )
    return choice.contamination


def smd_train_halves(
    thr: float, contamination: float | None, cfg: StreamConfig
) -> dict[str, float]:
    incidents = dict.fromkeys(MODES, 0)
    days = 0.0
    for machine in MACHINES:
        train, _test, _raw = load(machine)
        half = len(train) // 2
        s = stream_scores(train, METRICS, cfg)
        c = host_contamination(train.iloc[:half], s[:half], thr, contamination)
        det = AnomalyDetector(contamination=c).fit(train.iloc[:half], METRICS)
        s = s[half:]
        f = det.score_frame(train).score[half:]
        for mode, flags in combined(s, f, det.fitted_threshold, thr).items():
            incidents[mode] += false_incidents(flags)
        days += (len(train) - half) / 1440.0
        print(f"  {machine}: {(len(train) - half) / 1440.0:.1f} days, forest at {c}", flush=True)
    return {m: incidents[m] / days for m in MODES}


def smd_test_halves(
    thr: float, contamination: float | None, cfg: StreamConfig
) -> dict[str, DetectionCounts]:
    totals = {m: DetectionCounts() for m in MODES}
    for machine in MACHINES:
        train, test, raw = load(machine)
        events = [Event(e["start"], e["end"], "anomaly") for e in raw]
        both = pd.concat([train, test], ignore_index=True)
        s = stream_scores(both, METRICS, cfg)
        c = host_contamination(train, s[: len(train)], thr, contamination)
        print(f"  {machine}: forest at {c}", flush=True)
        det = AnomalyDetector(contamination=c).fit(train, METRICS)
        s = s[len(train) :]
        history = det.history_samples
        f = det.score_frame(pd.concat([train.iloc[-history:], test], ignore_index=True))
        for mode, flags in combined(s, f.score[history:], det.fitted_threshold, thr).items():
            totals[mode] = totals[mode] + detection_counts(
                events, incident_rows(flags, CONSECUTIVE)
            )
    return totals


def synthetic(thr: float, cfg: StreamConfig) -> dict[str, dict[str, Any]]:
    first = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
    start = pd.Timestamp(first["timestamp"].iloc[-1]).to_pydatetime() + timedelta(minutes=1)
    second = SyntheticDataGenerator(seed=7).generate_full_training_set(30, start=start)
    outcome = train_detector(first, contamination=0.05, n_estimators=100, synthetic_seed=42)
    det = artifact.load(outcome.artifact, outcome.sha256)
    both = pd.concat([first, second], ignore_index=True)
    s = stream_scores(both, METRIC_NAMES, cfg)[len(first) :]
    history = det.history_samples
    f = det.score_frame(pd.concat([first.iloc[-history:], second], ignore_index=True))
    labels = second["label"].astype(str).to_numpy()
    out = {}
    for mode, flags in combined(s, f.score[history:], det.fitted_threshold, thr).items():
        result = evaluate_labels(labels, incident_rows(flags, CONSECUTIVE))
        out[mode] = {
            "event_precision": result["overall"]["event_precision"],
            "recall": {k: v["event_recall"] for k, v in result["scenarios"].items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=float, default=0.9999)
    ap.add_argument(
        "--contamination", type=float, default=None, help="one for every host (default: per host)"
    )
    ap.add_argument("--config", nargs="*", default=[], help="StreamConfig key=value overrides")
    ap.add_argument("--skip-test", action="store_true", help="design runs: not the test halves")
    args = ap.parse_args()
    cfg = config_from(args.config)
    t0 = time.perf_counter()
    rule = args.contamination or f"per host, budget {INCIDENT_BUDGET} incidents a day"
    print(f"threshold {args.threshold}, SMD forest contamination {rule}")
    print("SMD train halves, false incidents per host-day (second half of each train half):")
    for mode, rate in smd_train_halves(args.threshold, args.contamination, cfg).items():
        print(f"  {mode:8s} {rate:.3f}")
    print("synthetic month (seed 7) after the quick start's (seed 42):")
    for mode, r in synthetic(args.threshold, cfg).items():
        print(f"  {mode:8s} event precision {r['event_precision']:.3f} recall {r['recall']}")
    if args.skip_test:
        return
    print("SMD test halves (reported, not chosen on), pooled, as incidents:")
    for mode, c in smd_test_halves(args.threshold, args.contamination, cfg).items():
        print(
            f"  {mode:8s} point F1 {c.f1:.3f} | event P {c.event_precision:.3f} "
            f"R {c.event_recall:.3f} ({c.events_detected}/{c.events}, {c.flagged_runs} runs)"
        )
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
