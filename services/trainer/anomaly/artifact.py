"""The stored form of a detector (format 1: an npz of arrays, JSON config, the skops forest).

Usage: ``blob = dump(det)``; ``det = load(blob, sha256(blob), threads=threads)``.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio
from sklearn.ensemble import IsolationForest

from services.trainer.anomaly.calibration import Calibrator
from services.trainer.anomaly.correlation import CorrelationView
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.features import FeatureConfig
from services.trainer.anomaly.forest import FlatForest, ScoringThreads, check_forest

FORMAT_VERSION = 1
ARTIFACT_FORMAT = "npz+skops"
# Types skops must trust to rebuild an Isolation Forest. The tree arrays are also
# bounds-checked after loading, and the whole file is checked against its sha256.
_TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree"]
# Format 1 names options of earlier experiments; this build writes and reads only these values.
_FIXED = {"threshold_method": "quantile", "pot_level": 0.98, "pot_risk": 0.001}
_FIXED_MEMORY_HOURS = 24
_FIXED_FEATURES = {"baseline_stat": "mean", "level_median": 0}
_CALIBRATORS = ("cal_forest", "cal_dev", "cal_final", "cal_jump")  # stored in this order


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def feature_config_dict(cfg: FeatureConfig) -> dict[str, Any]:
    """A feature configuration as format 1 stores it (and the model's parameters show it)."""
    return {
        "interval_s": cfg.interval_s,
        "mean_windows": list(cfg.mean_windows),
        "std_windows": list(cfg.std_windows),
        "min_windows": list(cfg.min_windows),
        "max_windows": list(cfg.max_windows),
        "lags": list(cfg.lags),
        "baseline_window": cfg.baseline_window,
        **_FIXED_FEATURES,
        "time_features": cfg.time_features,
    }


def dump(det: AnomalyDetector) -> bytes:
    """Serialise a fitted detector without pickle."""
    fitted = det.fitted()
    config = {
        "format_version": FORMAT_VERSION,
        "contamination": det.contamination,
        "n_estimators": det.n_estimators,
        "max_samples": det.max_samples,
        "smoothing": det.smoothing,
        "random_state": det.random_state,
        "threshold": det.fitted_threshold,
        **_FIXED,
        "shift_memory_hours": _FIXED_MEMORY_HOURS,
        "n_train": det.n_train,
        "metrics": list(det.metrics),
        "feature_config": feature_config_dict(det.extractor.config),
        "depth": fitted.flat.depth,
        "normaliser": fitted.flat.normaliser,
        "tails": [getattr(fitted, name).tail for name in _CALIBRATORS],
        "correlation": det.correlation,
        "corr_tail": det.cal_corr.tail if det.cal_corr is not None else None,
    }
    arrays: dict[str, npt.NDArray[Any]] = {
        "config": np.frombuffer(json.dumps(config).encode(), dtype=np.uint8),
        "forest": np.frombuffer(sio.dumps(fitted.forest), dtype=np.uint8),
        "medians": det.extractor.medians,
        "scales": det.extractor.scales,
        "mean": det.mean,
        "scale": det.scale,
        "dev_ref": det.dev_ref,
        "z_ref": det.z_ref,
        "jump_ref": det.jump_ref,
    }
    for name in _CALIBRATORS:
        cal: Calibrator = getattr(fitted, name)
        arrays[f"{name}_knots"] = cal.knots
        arrays[f"{name}_probs"] = cal.probs
    if det.corr is not None and det.cal_corr is not None:
        arrays["corr_mean"] = det.corr.mean
        arrays["corr_basis"] = det.corr.basis
        arrays["corr_residual_var"] = det.corr.residual_var
        arrays["cal_corr_knots"] = det.cal_corr.knots
        arrays["cal_corr_probs"] = det.cal_corr.probs
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load(data: bytes, checksum: str, *, threads: ScoringThreads | None = None) -> AnomalyDetector:
    """A detector from ``dump``'s bytes; ValueError if the checksum or the format differs."""
    actual = sha256(data)
    if actual != checksum:
        raise ValueError(f"model checksum mismatch: expected {checksum}, got {actual}")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arr = {k: npz[k] for k in npz.files}
    config = json.loads(arr["config"].tobytes().decode())
    _check_layout(config, arr)
    det = AnomalyDetector(
        contamination=float(config["contamination"]),
        n_estimators=int(config["n_estimators"]),
        max_samples=int(config["max_samples"]),
        smoothing=int(config["smoothing"]),
        random_state=int(config["random_state"]),
        # versions stored before the correlation view have none and score as they did
        correlation=float(config.get("correlation", 0.0)),
        feature_config=_feature_config(config["feature_config"]),
        threads=threads,
    )
    fx = det.extractor
    fx.metrics = tuple(str(m) for m in config["metrics"])
    fx.medians, fx.scales = arr["medians"], arr["scales"]
    det.mean, det.scale = arr["mean"], arr["scale"]
    det.dev_ref, det.z_ref, det.jump_ref = arr["dev_ref"], arr["z_ref"], arr["jump_ref"]
    tails = [float(t) for t in config["tails"]]
    for name, tail in zip(_CALIBRATORS, tails, strict=True):
        setattr(det, name, Calibrator(arr[f"{name}_knots"], arr[f"{name}_probs"], tail))
    if "corr_basis" in arr:
        det.corr = _correlation_view(arr, n_metrics=len(fx.metrics))
        det.cal_corr = Calibrator(
            arr["cal_corr_knots"], arr["cal_corr_probs"], float(config["corr_tail"])
        )
    forest = sio.loads(arr["forest"].tobytes(), trusted=_TRUSTED_SKOPS_TYPES)
    if not isinstance(forest, IsolationForest):
        raise ValueError("stored forest is not an IsolationForest")
    check_forest(forest, n_features=len(det.mean))
    det.forest = forest
    det.flat = FlatForest.from_forest(forest)
    det.fitted_threshold = float(config["threshold"])
    det.n_train = int(config["n_train"])
    return det


def _check_layout(config: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Refuse, saying why, a model this build would not score as it was trained."""
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"artifact format {version} is not supported "
            f"(this build reads format {FORMAT_VERSION}); retrain"
        )
    features = config.get("feature_config", {})
    found = [
        *((key, config.get(key), want) for key, want in _FIXED.items()),
        ("shift_memory_hours", config.get("shift_memory_hours"), _FIXED_MEMORY_HOURS),
        *((key, features.get(key), want) for key, want in _FIXED_FEATURES.items()),
    ]
    problems = [
        f"{key} {'missing' if got is None else repr(got)}"
        for key, got, want in found
        if got != want
    ]
    if any(f"{name}_knots" not in arrays for name in _CALIBRATORS):
        problems.append("no jump view")
    if problems:
        raise ValueError(
            f"artifact format {FORMAT_VERSION} of a detector variant this build does not score "
            f"({', '.join(problems)}) is not supported; retrain"
        )


def _correlation_view(arr: dict[str, Any], *, n_metrics: int) -> CorrelationView:
    mean, basis, var = arr["corr_mean"], arr["corr_basis"], arr["corr_residual_var"]
    if (
        mean.shape != (n_metrics,)
        or var.shape != (n_metrics,)
        or basis.ndim != 2
        or basis.shape[0] != n_metrics
    ):
        raise ValueError("stored correlation view does not match the detector's metrics")
    return CorrelationView(mean=mean, basis=basis, residual_var=var)


def _feature_config(data: dict[str, Any]) -> FeatureConfig:
    return FeatureConfig(
        interval_s=float(data["interval_s"]),
        mean_windows=tuple(int(w) for w in data["mean_windows"]),
        std_windows=tuple(int(w) for w in data["std_windows"]),
        min_windows=tuple(int(w) for w in data["min_windows"]),
        max_windows=tuple(int(w) for w in data["max_windows"]),
        lags=tuple(int(w) for w in data["lags"]),
        baseline_window=int(data["baseline_window"]),
        time_features=bool(data["time_features"]),
    )
