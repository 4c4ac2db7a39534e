"""The incident rule and the per-host budget beside the service's (issue 9's SMD recall),
designed on the train halves, the synthetic month and injected anomalies, not the test halves.

Run: ``python -m bench.smd_recall_cache --out C``, ``python -m bench.smd_inject_cache --out I
--profile shift|broad`` (both with the same ``--n-estimators``/``--max-samples`` as here, when
given), then ``python -m bench.bench_smd_incident_rules --cache C --inject I1 I2 [--test]``
with one of:

- ``--open K/N``: an incident opens at the K-th of the last N samples above the threshold
  (the service: 3/3), and resolves after ``--resolve-after`` samples in a row below (3);
- ``--joints a1,a2,...``: each host's joint cut-off (the two layers' p multiplied, at most
  a; the host's threshold 0.999 is a = 1.03e-4) chosen by the budget beside its forest's
  contamination: first the loosest a that fits at the smallest contamination, then the
  largest contamination that fits with it (``--order c`` the other way round).

The base rule is the service's: the per-metric likelihood, the forest at the host's budget
contamination or the two joined (``hostscore.combine``), each host's contamination chosen
by the budget rule with this bench's incident rule (``bench_smd_agree``'s ``--rechoose``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import bench_smd_agree as agree
from bench.bench_smd import MACHINES, METRICS
from bench.bench_smd import load as load_smd
from bench.bench_smd_recall import load
from services.trainer.anomaly.budget import GRID
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    confirm,
    detection_counts,
    open_until_closed,
    runs,
)

Array = np.ndarray
FISHER_AT_THRESHOLD = 1.03e-4  # Fisher's method at the host's threshold 0.999
THRESHOLD = 0.999


@dataclass(frozen=True)
class Rule:
    open_k: int = 3
    open_n: int = 3
    resolve_after: int = 3

    def incidents(self, above: np.ndarray) -> np.ndarray:
        """Rows with an incident open: opened at the K-th of N above, resolved by the
        ``resolve_after``-th in a row below."""
        a = np.asarray(above, dtype=bool)
        count = np.convolve(a.astype(int), np.ones(self.open_n, dtype=int))[: len(a)]
        return open_until_closed((count >= self.open_k) & a, confirm(~a, self.resolve_after))


def flags(rule: Rule, a: float, stream: Array, per: Array, forest: Array, f_thr: float) -> Array:
    base = (stream >= THRESHOLD) | (forest >= f_thr)
    joint = agree.extra(f"fisher:a={a}", stream, per, forest, THRESHOLD)
    return rule.incidents(base | joint)


def choose(
    rule: Rule,
    joints: list[float],
    order: str,
    history: pd.DataFrame,
    stream: Array,
    per: Array,
    kw: dict[str, int],
    grid: tuple[float, ...] = GRID,
) -> tuple[float, float]:
    """The host's (joint cut-off, contamination) from its held-out third, as the service's
    budget rule does for the contamination alone."""
    cut = 2 * len(history) // 3
    det = AnomalyDetector(contamination=min(grid), **kw).fit(history.iloc[:cut], METRICS)
    forest = det.score_frame(history).score
    days = (len(history) - cut) / 1440.0

    def fits(a: float, c: float) -> bool:
        f_thr = float(np.quantile(forest[:cut], 1.0 - c))
        fl = flags(rule, a, stream[cut:], per[cut:], forest[cut:], f_thr)
        return len(runs(fl)) / days <= 1.0

    def loosest(options: list[float], ok: Callable[[float], bool]) -> float:
        best = options[0]
        for x in options:
            if ok(x):
                best = x
        return best

    if order == "a":
        a = loosest(joints, lambda x: fits(x, grid[0]))
        return a, loosest(list(grid), lambda c: fits(a, c))
    c = loosest(list(grid), lambda y: fits(joints[0], y))
    return loosest(joints, lambda x: fits(x, c)), c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--inject", type=Path, nargs="*", default=[])
    ap.add_argument("--open", default="3/3", help="K/N: the K-th of the last N above opens")
    ap.add_argument("--resolve-after", type=int, default=3)
    ap.add_argument("--joints", default=str(FISHER_AT_THRESHOLD), help="a1,a2,... loosest last")
    ap.add_argument("--order", choices=("a", "c"), default="a")
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--max-samples", type=int, default=256)
    ap.add_argument("--grid", default=",".join(str(c) for c in GRID), help="contaminations")
    ap.add_argument("--test", action="store_true")
    args = ap.parse_args()
    grid = tuple(float(x) for x in args.grid.split(","))
    k, n = (int(x) for x in args.open.split("/"))
    rule = Rule(open_k=k, open_n=n, resolve_after=args.resolve_after)
    joints = [float(x) for x in args.joints.split(",")]
    kw = {"n_estimators": args.n_estimators, "max_samples": args.max_samples}
    fi, days, per_machine, choices = 0, 0.0, [], []
    found = dict.fromkeys(args.inject, 0)
    n_events = dict.fromkeys(args.inject, 0)
    total = DetectionCounts()
    for m in MACHINES:
        d = load(args.cache, m)
        train, _test, _raw = load_smd(m)
        n_train, half = int(d["n_train"]), int(d["half"])
        s, per = d["stream"], d["metric_surprise"]
        a, c = choose(rule, joints, args.order, train.iloc[:half], s[:half], per[:half], kw, grid)
        f_thr = float(np.quantile(d["design_forest"][:half], 1.0 - c))
        fl = flags(rule, a, s[half:n_train], per[half:n_train], d["design_forest"][half:], f_thr)
        fi += len(runs(fl))
        per_machine.append(len(runs(fl)))
        days += (n_train - half) / 1440.0
        for i in args.inject:
            e = load(i, m)
            fl = flags(rule, a, e["stream"], e["metric_surprise"], e["forest"], f_thr)
            events = [
                Event(int(x), int(y), "x")
                for x, y in zip(e["event_start"], e["event_end"], strict=True)
            ]
            found[i] += detection_counts(events, fl).events_detected
            n_events[i] += len(events)
        chosen = [(a, c)]
        if args.test:
            at, ct = choose(rule, joints, args.order, train, s[:n_train], per[:n_train], kw, grid)
            chosen.append((at, ct))
            f_thr = float(np.quantile(d["test_forest_train"], 1.0 - ct))
            fl = flags(rule, at, s[n_train:], per[n_train:], d["test_forest"], f_thr)
            events = [
                Event(int(x), int(y), "anomaly")
                for x, y in zip(d["event_start"], d["event_end"], strict=True)
            ]
            total = total + detection_counts(events, fl)
        choices.append((m, chosen))
    inj = " ".join(f"{found[i] / n_events[i]:.2f}" for i in args.inject)
    print(f"{rule}, joints {joints} order {args.order}, forest {kw}")
    print(f"  (joint cut-off, contamination) per machine, design[, test]: {choices}")
    print(f"  train FI/host-day {fi / days:.3f} {per_machine} | injected R {inj}")
    if args.test:
        print(
            f"  TEST point F1 {total.f1:.3f} event P {total.event_precision:.3f} "
            f"R {total.event_recall:.3f} ({total.events_detected}/{total.events}, "
            f"{total.flagged_runs} runs)"
        )


if __name__ == "__main__":
    main()
