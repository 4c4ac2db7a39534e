"""One LightGBM booster per horizon: trained on a time split, warning thresholds for a precision.

Usage::

    model = train([history_from_frame(df)], definition=FailureDefinition())
    p = model.predict_window(recent_times, recent_values, explain=3)
    p.horizons[0].probability, p.horizons[0].warning, p.contributions[0].text

Training splits each host's history by time (never at random): the last
``validation_share`` is validation; training rows stop one horizon before it, so no training
label looks into the validation period. Each horizon's threshold is the lowest whose
precision on validation reaches ``precision_target``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from services.trainer.failure.definition import FailureDefinition, failure_onsets, horizon_labels
from services.trainer.failure.features import FeatureSpec, batch_features, describe, window_features
from shared.arrays import BoolArray, FloatArray
from shared.catalogue import METRIC_NAMES


@dataclass(frozen=True, slots=True)
class TrainParams:
    num_boost_round: int = 120
    learning_rate: float = 0.08
    num_leaves: int = 15
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.8
    lambda_l2: float = 1.0
    validation_share: float = 0.25
    precision_target: float = 0.8
    seed: int = 0
    num_threads: int = 2


@dataclass(slots=True)
class HostHistory:
    """A host's samples: epoch seconds, (n, len(metrics)) values; ``state`` from labels if known."""

    times: FloatArray
    values: FloatArray
    metrics: tuple[str, ...]
    state: BoolArray | None = None
    host: str = ""


def history_from_frame(
    df: pd.DataFrame, metrics: Sequence[str] = METRIC_NAMES, *, host: str = ""
) -> HostHistory:
    """A history from a frame with a UTC 'timestamp' column and one column per metric."""
    ts = pd.to_datetime(df["timestamp"], utc=True)
    times = ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
    values = df[list(metrics)].to_numpy(dtype=np.float64)
    return HostHistory(times, values, tuple(metrics), host=host)


@dataclass(slots=True)
class HorizonModel:
    horizon_min: int
    booster: lgb.Booster
    threshold: float
    validation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Contribution:
    feature: str
    value: float
    contribution: float  # log-odds pushed towards failure by this feature
    text: str


@dataclass(frozen=True, slots=True)
class HorizonPrediction:
    horizon_min: int
    probability: float
    threshold: float
    warning: bool


@dataclass(frozen=True, slots=True)
class FailurePrediction:
    horizons: list[HorizonPrediction]
    contributions: list[Contribution]


@dataclass(slots=True)
class FailureModel:
    definition: FailureDefinition
    spec: FeatureSpec
    horizons: list[HorizonModel]
    summary: dict[str, Any] = field(default_factory=dict)

    def predict_row(self, row: FloatArray, *, explain: int = 0) -> FailurePrediction:
        """Probabilities of one feature row (``FeatureSpec.names`` order)."""
        x = np.asarray(row, dtype=np.float64).reshape(1, -1)
        out = []
        for h in self.horizons:
            p = float(h.booster.predict(x)[0])
            out.append(HorizonPrediction(h.horizon_min, p, h.threshold, p >= h.threshold))
        contributions: list[Contribution] = []
        if explain > 0:
            lead = max(range(len(out)), key=lambda i: out[i].probability / out[i].threshold)
            contributions = self.explain(x[0], self.horizons[lead].horizon_min, top=explain)
        return FailurePrediction(out, contributions)

    def predict_window(
        self, times: FloatArray, values: FloatArray, *, explain: int = 0
    ) -> FailurePrediction:
        """Probabilities for the last sample of a host's recent samples (its last hour or more)."""
        return self.predict_row(window_features(self.spec, times, values), explain=explain)

    def predict_features(self, features: FloatArray) -> dict[int, FloatArray]:
        """Probabilities of many feature rows, per horizon (minutes)."""
        return {h.horizon_min: np.asarray(h.booster.predict(features)) for h in self.horizons}

    def explain(self, row: FloatArray, horizon_min: int, *, top: int = 3) -> list[Contribution]:
        """The features that pushed this row's probability up most (LightGBM's pred_contrib)."""
        h = next(h for h in self.horizons if h.horizon_min == horizon_min)
        contrib = np.asarray(h.booster.predict(row.reshape(1, -1), pred_contrib=True))[0, :-1]
        order = np.argsort(-contrib)[:top]
        return [
            Contribution(
                self.spec.names[j], float(row[j]), float(contrib[j]), describe(self.spec, j, row)
            )
            for j in order.tolist()
            if contrib[j] > 0
        ]


def lgb_names(spec: FeatureSpec) -> list[str]:
    """Feature names as LightGBM stores them (it refuses JSON punctuation such as ':')."""
    return [n.replace(":", "__") for n in spec.names]


@dataclass(slots=True)
class _Prepared:
    x: FloatArray
    y: dict[int, BoolArray]
    keep: dict[int, BoolArray]
    is_valid: BoolArray
    train_ok: dict[int, BoolArray]
    rows: int
    onsets: int


def prepare(
    histories: Sequence[HostHistory],
    definition: FailureDefinition,
    spec: FeatureSpec,
    validation_share: float,
) -> _Prepared:
    """Features, labels and the time split of every host's history."""
    xs, valids, onsets_total = [], [], 0
    ys: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    keeps: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    oks: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    for hist in histories:
        idx = [hist.metrics.index(m) for m in spec.metrics]
        values = hist.values[:, idx]
        t = hist.times
        state = hist.state
        if state is None:
            state = definition.state(t, hist.values, hist.metrics)
        onsets = failure_onsets(t, state)
        onsets_total += len(onsets)
        xs.append(batch_features(spec, t, values))
        cutoff = t[0] + (t[-1] - t[0]) * (1.0 - validation_share)
        valids.append(t >= cutoff)
        for h in definition.horizons_min:
            y, keep = horizon_labels(t, onsets, state, horizon_s=h * 60.0)
            ys[h].append(y)
            keeps[h].append(keep)
            oks[h].append(t + h * 60.0 < cutoff)
    cat = np.concatenate
    return _Prepared(
        x=np.vstack(xs),
        y={h: cat(v) for h, v in ys.items()},
        keep={h: cat(v) for h, v in keeps.items()},
        is_valid=cat(valids),
        train_ok={h: cat(v) for h, v in oks.items()},
        rows=sum(len(h.times) for h in histories),
        onsets=onsets_total,
    )


def train(
    histories: Sequence[HostHistory],
    *,
    definition: FailureDefinition | None = None,
    spec: FeatureSpec | None = None,
    params: TrainParams | None = None,
) -> FailureModel:
    """Train one booster per horizon of ``definition`` on the histories (time split per host)."""
    definition = definition or FailureDefinition()
    params = params or TrainParams()
    if not histories:
        raise ValueError("no history to train on")
    if spec is None:
        spec = FeatureSpec.for_metrics(histories[0].metrics, definition.conditions)
    for hist in histories:
        missing = [m for m in spec.metrics if m not in hist.metrics]
        if missing:
            raise ValueError(f"history of host {hist.host!r} lacks metrics {missing}")
    data = prepare(histories, definition, spec, params.validation_share)
    lgb_params = {
        "objective": "binary",
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "deterministic": True,
        "num_threads": params.num_threads,
        "verbose": -1,
    }
    # One binned dataset for every horizon: the rows every horizon may train on.
    train_rows = ~data.is_valid
    for h in definition.horizons_min:
        train_rows &= data.keep[h] & data.train_ok[h]
    if not train_rows.any():
        raise ValueError("no training rows: the histories are too short for the horizons")
    dataset = lgb.Dataset(
        data.x[train_rows],
        label=data.y[definition.horizons_min[0]][train_rows].astype(np.float64),
        feature_name=lgb_names(spec),
        params={"verbose": -1, "max_bin": 63},
        free_raw_data=False,
    ).construct()
    models = []
    for h in definition.horizons_min:
        dataset.set_label(data.y[h][train_rows].astype(np.float64))
        booster = lgb.train(lgb_params, dataset, num_boost_round=params.num_boost_round)
        valid = data.is_valid & data.keep[h]
        p = np.asarray(booster.predict(data.x[valid]))
        threshold, report = choose_threshold(data.y[h][valid], p, params.precision_target)
        report["train_rows"] = int(train_rows.sum())
        report["train_positives"] = int(data.y[h][train_rows].sum())
        models.append(HorizonModel(h, booster, threshold, report))
    summary = {
        "rows": data.rows,
        "hosts": len(histories),
        "onsets": data.onsets,
        "validation_share": params.validation_share,
        "params": asdict(params),
        "definition": definition.describe(),
    }
    return FailureModel(definition, spec, models, summary)


def choose_threshold(y: BoolArray, p: FloatArray, target: float) -> tuple[float, dict[str, Any]]:
    """The lowest threshold whose precision on (y, p) reaches ``target``, and how it did.

    Without a threshold reaching it, the one of the highest precision; without positives, 0.5.
    """
    report: dict[str, Any] = {
        "precision_target": target,
        "validation_rows": len(y),
        "validation_positives": int(np.sum(y)),
    }
    if not np.any(y) or np.all(y):
        report.update(threshold=0.5, target_reached=False, precision=None, recall=None)
        return 0.5, report
    precision, recall, thresholds = precision_recall_curve(y, p)
    # precision[i], recall[i] belong to ``p >= thresholds[i]``; the last point is recall 0.
    precision, recall = precision[:-1], recall[:-1]
    ok = np.flatnonzero(precision >= target)
    reached = len(ok) > 0
    i = int(ok[np.argmax(recall[ok])]) if reached else int(np.argmax(precision))
    threshold = float(thresholds[i])
    report.update(
        threshold=threshold,
        target_reached=reached,
        precision=float(precision[i]),
        recall=float(recall[i]),
        pr_auc=float(average_precision_score(y, p)),
    )
    return threshold, report
