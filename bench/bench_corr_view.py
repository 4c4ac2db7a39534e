"""A correlation view (a metric leaving its usual relation to the others) against the forest, on
the SMD train halves only: false incidents against injected recall (issue 9's recall).

Run: ``python -m bench.bench_corr_view [--components 0.95] [--window 5]``.

As ``bench_forest_variants`` (split in time, 70 % fits, the last 30 % scored as it is and
with 25 seeded injected shifts, 3 in a row). The view: each metric standardised as the
forest's features standardise it (training median and robust scale), a PCA of the training
rows keeping ``--components`` of the variance, and the squared residual off that subspace
(the Q statistic), each residual dimension over its training variance, averaged causally
over ``--window`` rows. Flagged at the ``1 - c`` quantile of its training values. Rows of
``either`` are flagged when the forest (at c_f) or the view (at c_v) is; the pairs spend
the same total contamination as the forest alone in the row above them.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.bench_smd import MACHINES, METRICS, load
from bench.bench_smd_proxy import FIT_SHARE, inject
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    detection_counts,
    incident_rows,
    runs,
)
from services.trainer.anomaly.history import causal_mean

GRID = (0.001, 0.002, 0.003, 0.005, 0.007, 0.01)


class CorrView:
    def __init__(self, det: AnomalyDetector, keep: float, window: int) -> None:
        self.med = det.extractor.medians
        self.scale = det.extractor.scales
        self.keep = keep
        self.window = window

    def z(self, values: np.ndarray) -> np.ndarray:
        return np.clip((values - self.med) / self.scale, -50, 50)

    def fit(self, values: np.ndarray) -> CorrView:
        z = self.z(values)
        self.mu = z.mean(axis=0)
        _u, s, vt = np.linalg.svd(z - self.mu, full_matrices=False)
        share = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-12)
        k = int(np.searchsorted(share, self.keep) + 1)
        self.basis = vt[:k].T
        r = self._residual(z)
        self.rvar = np.maximum(r.var(axis=0), 1e-6)
        return self

    def _residual(self, z: np.ndarray) -> np.ndarray:
        c = z - self.mu
        return c - (c @ self.basis) @ self.basis.T

    def raw(self, values: np.ndarray) -> np.ndarray:
        r = self._residual(self.z(values))
        q = (r**2 / self.rvar).sum(axis=1) / r.shape[1]
        return causal_mean(q, self.window)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=float, nargs="*", default=[0.9, 0.95, 0.99])
    ap.add_argument("--window", type=int, nargs="*", default=[1, 5])
    ap.add_argument("--events", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    names = ["forest"] + [f"q{k}_w{w}" for k in args.components for w in args.window]
    pairs = [(cf, cv) for cf in GRID for cv in (0.001, 0.002, 0.003) if cf + cv <= 0.011]
    fi: dict[str, np.ndarray] = {n: np.zeros(len(GRID)) for n in names}
    found: dict[str, np.ndarray] = {n: np.zeros(len(GRID)) for n in names}
    pts: dict[str, list[DetectionCounts]] = {n: [DetectionCounts()] * len(GRID) for n in names}
    pfi = {(n, p): 0 for n in names[1:] for p in pairs}
    pfound = {(n, p): 0 for n in names[1:] for p in pairs}
    total, days = 0, 0.0
    for machine in MACHINES:
        train, _test, _raw = load(machine)
        cut = int(len(train) * FIT_SHARE)
        injected, events = inject(train, cut, rng, args.events)
        total += len(events)
        days += (len(train) - cut) / 1440
        det = AnomalyDetector(contamination=0.001).fit(train.iloc[:cut], METRICS)
        scores = {"forest": (det.score_frame(train).score, det.score_frame(injected).score)}
        clean_v = train[METRICS].to_numpy(float)
        inj_v = injected[METRICS].to_numpy(float)
        for k in args.components:
            for w in args.window:
                view = CorrView(det, k, w).fit(clean_v[:cut])
                scores[f"q{k}_w{w}"] = (view.raw(clean_v), view.raw(inj_v))
        flags: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}
        for n, (clean, hit) in scores.items():
            for j, c in enumerate(GRID):
                thr = float(np.quantile(clean[:cut], 1.0 - c))
                a, b = clean[cut:] >= thr, hit[cut:] >= thr
                flags[(n, c)] = (a, b)
                fi[n][j] += len(runs(incident_rows(a, 3)))
                counts = detection_counts(events, incident_rows(b, 3))
                found[n][j] += counts.events_detected
                pts[n][j] = pts[n][j] + counts
        for n in names[1:]:
            for cf, cv in pairs:
                fa, fb = flags[("forest", cf)]
                va, vb = flags[(n, cv)]
                pfi[(n, (cf, cv))] += len(runs(incident_rows(fa | va, 3)))
                c2 = detection_counts(events, incident_rows(fb | vb, 3))
                pfound[(n, (cf, cv))] += c2.events_detected
        print(f"{machine} done", flush=True)
    print(f"{days:.1f} held-out days, {total} injected events; c: FI a day / recall / point F1")
    for n in names:
        cells = [
            f"{c}: {fi[n][j] / days:.2f}/{found[n][j] / total:.2f}/{pts[n][j].f1:.2f}"
            for j, c in enumerate(GRID)
        ]
        print(f"{n:10s} " + "  ".join(cells))
    print("either (forest at c_f or view at c_v): FI a day / recall")
    for n in names[1:]:
        cells = [
            f"{cf}+{cv}: {pfi[(n, (cf, cv))] / days:.2f}/{pfound[(n, (cf, cv))] / total:.2f}"
            for cf, cv in pairs
        ]
        print(f"{n:10s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
