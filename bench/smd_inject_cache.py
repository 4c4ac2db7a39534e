"""Both layers' scores on the SMD train halves with anomalies injected into their second half,
kept for the rules that join them (issue 9's recall, designed without the test halves).

Run: ``python -m bench.smd_inject_cache [--out /tmp/smd_inject] [--profile shift|broad]``;
then ``python -m bench.bench_smd_agree --cache ... --inject ...``.

As ``smd_recall_cache``'s design runs: the forest is fitted on the first half of each train
half (so its scores on the clean second half are the cache's ``design_forest``); here it scores
the train half with events injected after its middle, and the per-metric layer streams over it
from the first row. Profiles (``--profile``):

- ``shift``: ``bench_smd_proxy.inject``, 2-4 varying metrics raised by 0.1-0.3 (of the [0, 1]
  scaled range) for 3-60 minutes;
- ``--tail T``: after each event, half its step fades linearly to nothing over T unlabelled
  rows (a gradual recovery; its flagged runs outside the events count against precision);
- ``broad``: 4-10 varying metrics moved together, each by 3-8 times its own spread on the
  history (median absolute deviation, at least 0.01), up or down, for 3-60 minutes: a fault
  that moves several metrics at once at moderate strength.

Saved per machine: ``stream``, ``metric_surprise``, ``forest`` (rows of the second half) and
the injected events (rows relative to the middle).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import smd_recall_cache
from bench.bench_smd import MACHINES, METRICS, load
from bench.bench_smd_proxy import DURATIONS, inject
from bench.bench_stream_smd import config_from
from bench.smd_recall_cache import stream_pass
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import Event


def inject_broad(
    frame: pd.DataFrame, start: int, rng: np.random.Generator, n_events: int
) -> tuple[pd.DataFrame, list[Event]]:
    out = frame.copy()
    values = out[METRICS].to_numpy(copy=True)
    hist = values[:start]
    mad = np.median(np.abs(hist - np.median(hist, axis=0)), axis=0)
    scale = np.maximum(mad, 0.01)
    varying = [j for j in range(len(METRICS)) if np.ptp(values[start:, j]) > 0]
    places = np.arange(start + 100, len(out) - 100, 200)
    events = []
    for s in np.sort(rng.choice(places, n_events, replace=False)):
        d = int(rng.choice(DURATIONS))
        k = min(int(rng.integers(4, 11)), len(varying))
        cols = rng.choice(varying, k, replace=False)
        for j in cols:
            step = rng.uniform(3.0, 8.0) * scale[j] * rng.choice((-1.0, 1.0))
            values[s : s + d, j] = np.clip(values[s : s + d, j] + step, 0, 1)
        events.append(Event(int(s) - start, int(s) + d - 1 - start, "injected"))
    out[METRICS] = values
    return out, events


def add_tails(
    frame: pd.DataFrame, injected: pd.DataFrame, start: int, events: list[Event], tail: int
) -> pd.DataFrame:
    """A gradual recovery after each event: half of its last row's step, fading linearly to
    nothing over ``tail`` unlabelled rows (real faults seldom end at once)."""
    if tail <= 0:
        return injected
    out = injected.copy()
    before = frame[METRICS].to_numpy()
    values = out[METRICS].to_numpy(copy=True)
    for e in events:
        end = start + e.end
        step = values[end] - before[end]
        for i in range(1, tail + 1):
            if end + i >= len(values):
                break
            values[end + i] = np.clip(before[end + i] + 0.5 * step * (1 - i / (tail + 1)), 0, 1)
    out[METRICS] = values
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/smd_inject"))
    ap.add_argument("--profile", choices=("shift", "broad"), default="shift")
    ap.add_argument("--events", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tail", type=int, default=0, help="rows of unlabelled fading recovery")
    ap.add_argument("--config", nargs="*", default=[], help="StreamConfig overrides (key=value)")
    ap.add_argument("--n-estimators", type=int, default=100, help="the forest's trees")
    ap.add_argument("--max-samples", type=int, default=256, help="the forest's samples a tree")
    args = ap.parse_args()
    smd_recall_cache.CONFIG = config_from(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for machine in MACHINES:
        t0 = time.perf_counter()
        train, _test, _raw = load(machine)  # the test half is not read
        half = len(train) // 2
        injector = inject if args.profile == "shift" else inject_broad
        injected, events = injector(train, half, rng, args.events)
        injected = add_tails(train, injected, half, events, args.tail)
        design = AnomalyDetector(
            contamination=0.001, n_estimators=args.n_estimators, max_samples=args.max_samples
        ).fit(train.iloc[:half], METRICS)
        forest = design.score_frame(injected).score[half:]
        stream, per = stream_pass(injected, METRICS)
        np.savez_compressed(
            args.out / f"{machine}.npz",
            stream=stream[half:],
            metric_surprise=per[half:],
            forest=forest,
            event_start=np.array([e.start for e in events]),
            event_end=np.array([e.end for e in events]),
        )
        print(f"{machine}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
