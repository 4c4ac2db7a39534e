"""SMD through the streaming detector exactly as the service runs it on a new host.

Run: ``python -m bench.bench_stream_smd [--machines ...] [--consecutive 3]``.

Each machine is one new host: the detector learns from the first row of its train half and
scores every row causally, train half then test half, with its defaults. Detections are
counted as the service raises incidents (open after ``--consecutive`` rows in a row at or
above the threshold, resolved after as many below; ``evaluation.incident_rows``).

- *train halves* (no labels; mostly normal): incidents per host-day after the probation,
  at each threshold of the grid: what a user sees on a quiet host. The default threshold
  is chosen here and on NAB and synthetic data, never on the test labels.
- *test halves*: point P/R/F1, event precision/recall and hit@3 (an event's labelled
  metrics among the top 3 metrics of its first flagged row), pooled over the machines,
  at the default threshold; reported as measured.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.bench_smd import MACHINES, METRICS, load
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    attribution_hits,
    detection_counts,
    incident_rows,
    runs,
)
from services.trainer.anomaly.streaming import HostStream, StreamConfig, surprise_of
from shared.settings import Settings

GRID = (0.99, 0.999, 0.9999, 0.99999, 0.999999)


def stream_machine(machine: str, config: StreamConfig) -> dict[str, object]:
    train, test, raw = load(machine)
    frames = [train, test]
    stream = HostStream(tuple(METRICS), config)
    out = {}
    t0 = time.perf_counter()
    n_rows = 0
    for name, frame in zip(("train", "test"), frames, strict=True):
        times = frame["timestamp"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
        values = frame[METRICS].to_numpy(dtype=float)
        surprise = np.zeros(len(frame))
        learning = np.zeros(len(frame), dtype=bool)
        tops: list[list[str]] = []
        for i in range(len(frame)):
            r = stream.update(float(times[i]), dict(zip(METRICS, values[i].tolist(), strict=True)))
            surprise[i] = r.surprise
            learning[i] = all(m.learning for m in r.metrics)
            tops.append([m.metric for m in r.top(3)])
        n_rows += len(frame)
        out[name] = (surprise, learning, tops)
    out["rate"] = n_rows / (time.perf_counter() - t0)
    out["raw"] = raw
    out["days_train"] = (
        train["timestamp"].iloc[-1] - train["timestamp"].iloc[0]
    ).total_seconds() / 86400
    out["nbytes"] = stream.nbytes()
    return out


def config_from(pairs: list[str]) -> StreamConfig:
    """``StreamConfig`` with ``key=value`` overrides (benchmarks compare variants with it)."""
    fields = StreamConfig.__dataclass_fields__
    kw = {k: type(getattr(StreamConfig(), k))(v) for k, v in (p.split("=", 1) for p in pairs)}
    unknown = set(kw) - set(fields)
    if unknown:
        raise SystemExit(f"unknown StreamConfig fields: {sorted(unknown)}")
    return StreamConfig(**kw)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", nargs="*", default=list(MACHINES))
    ap.add_argument("--consecutive", type=int, default=3)
    ap.add_argument(
        "--config", nargs="*", default=[], help="StreamConfig overrides (key=value), to compare"
    )
    args = ap.parse_args()
    config = config_from(args.config)
    default = float(getattr(Settings(), "anomaly_threshold", 0.9999))
    results = {m: stream_machine(m, config) for m in args.machines}
    print(
        f"streaming detector {args.config or 'defaults'}; incidents after {args.consecutive} in a row"
    )
    print("train halves: incidents per host-day after probation, by threshold")
    for thr in sorted({*GRID, default}):
        s_thr = surprise_of(thr)
        per_day = []
        for r in results.values():
            surprise, learning, _ = r["train"]
            rows = incident_rows((surprise >= s_thr) & ~learning, args.consecutive)
            per_day.append(len(runs(rows)) / r["days_train"])
        mark = "  <- default" if thr == default else ""
        print(
            f"  threshold {thr:<10} "
            + " ".join(f"{v:5.2f}" for v in per_day)
            + f" | mean {np.mean(per_day):.2f}{mark}"
        )
    s_thr = surprise_of(default)
    tot = DetectionCounts()
    tops_all, truths = [], []
    for m, r in results.items():
        surprise, _, tops = r["test"]
        events = [Event(e["start"], e["end"], "anomaly") for e in r["raw"]]
        flags = incident_rows(surprise >= s_thr, args.consecutive)
        c = detection_counts(events, flags)
        tot = tot + c
        for e in r["raw"]:
            idx = np.flatnonzero(flags[e["start"] : e["end"] + 1])
            if len(idx):
                tops_all.append(tops[e["start"] + int(idx[0])])
                truths.append(e["metrics"])
        print(
            f"{m:13s} test: P {c.precision:.3f} R {c.recall:.3f} F1 {c.f1:.3f} | event P "
            f"{c.event_precision:.3f} R {c.event_recall:.3f} ({c.events_detected}/{c.events}, "
            f"{c.flagged_runs} runs) | {r['rate']:,.0f} rows/s, state {r['nbytes']:,} B"
        )
    attr = attribution_hits(tops_all, truths, n_metrics=len(METRICS), k=3)
    print(
        f"POOLED test at {default}: P {tot.precision:.3f} R {tot.recall:.3f} F1 {tot.f1:.3f} | "
        f"event P {tot.event_precision:.3f} R {tot.event_recall:.3f} | hit@3 {attr.hit_rate:.3f} "
        f"(chance {attr.chance:.3f}, n={attr.events})"
    )


if __name__ == "__main__":
    main()
