"""A metric's history as bucket means, the frames Prophet fits: from database rows or raw samples.

Usage: `frames_from_buckets(table, metrics, bucket_seconds=900)` on `bucketed_history` rows, or
`history_from_samples(samples, metrics, resolution="15min")` on a DataFrame of samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

BUCKET = "bucket"
SAMPLES = "samples"


def normal_column(metric: str) -> str:
    """The column of a metric's mean over samples labelled normal."""
    return f"{metric}__normal"


def square_column(metric: str) -> str:
    """The column of the mean of a metric's squared samples (their spread within the bucket)."""
    return f"{metric}__sq"


def bucket_seconds(resolution: str | pd.Timedelta) -> int:
    return int(pd.Timedelta(resolution).total_seconds())


@dataclass(frozen=True, slots=True)
class MetricHistory:
    """One metric's bucket means as Prophet ``ds``/``y`` frames, ``ds`` the bucket middle (naive UTC).

    ``fit`` holds the means of samples labelled normal (what the model fits), ``observed`` the
    means of every sample (what calibrates the interval and what a holdout is scored on),
    ``spread`` (when known) the standard deviation of the samples within each bucket, so
    that the interval covers samples, not only bucket means. Empty buckets are absent.
    """

    fit: pd.DataFrame
    observed: pd.DataFrame
    spread: pd.DataFrame | None = None


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.DatetimeIndex([]), "y": np.array([], dtype=float)})


def frames_from_buckets(
    table: pd.DataFrame, metrics: Sequence[str], *, bucket_seconds: int
) -> dict[str, MetricHistory]:
    """Bucket means (columns ``bucket``, ``<metric>``, ``<metric>__normal``) as each metric's frames.

    ``bucket`` is floor(epoch seconds / width); each mean is stamped at its bucket's middle, since
    stamping it at the start would shift every fitted curve half a bucket early.
    """
    if table.empty:
        return {name: MetricHistory(_empty(), _empty()) for name in metrics}
    starts = pd.to_datetime(table[BUCKET].astype("int64") * bucket_seconds, unit="s")
    ds = starts + pd.Timedelta(seconds=bucket_seconds / 2)
    out: dict[str, MetricHistory] = {}
    for name in metrics:
        fit, observed = (
            pd.DataFrame({"ds": ds, "y": pd.to_numeric(table[column], errors="coerce")})
            .astype({"y": float})
            .dropna()
            .reset_index(drop=True)
            for column in (normal_column(name), name)
        )
        spread = None
        if square_column(name) in table.columns:
            mean = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
            square = pd.to_numeric(table[square_column(name)], errors="coerce").to_numpy(
                dtype=float
            )
            std = np.sqrt(np.clip(square - mean * mean, 0.0, None))
            spread = pd.DataFrame({"ds": ds, "y": std}).dropna().reset_index(drop=True)
        out[name] = MetricHistory(fit=fit, observed=observed, spread=spread)
    return out


def bucket_means(
    samples: pd.DataFrame, metrics: Sequence[str], *, bucket_seconds: int
) -> pd.DataFrame:
    """What `repository.bucketed_history` computes in SQL, from a DataFrame of samples.

    ``samples`` has a ``timestamp`` column (or a DatetimeIndex; naive is UTC), the metric
    columns and optionally ``label``; without labels every sample counts as normal.
    """
    stamps = samples["timestamp"] if "timestamp" in samples.columns else samples.index
    index = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True))
    known = np.asarray(index.notna())
    epoch = pd.Timestamp(0, tz="UTC")
    bucket = np.asarray(
        (index[known] - epoch) // pd.Timedelta(seconds=bucket_seconds), dtype=np.int64
    )
    rows = samples[known]
    normal = (
        (rows["label"].astype(str) == "normal").to_numpy()
        if "label" in rows.columns
        else np.ones(len(rows), dtype=bool)
    )
    columns: dict[str, pd.Series] = {SAMPLES: pd.Series(bucket).groupby(bucket).size()}
    for name in metrics:
        values = pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float)
        # One column at a time: pandas averages a block holding NaNs along another path,
        # which moves the last bit of the other columns' means.
        columns[name] = pd.Series(values).groupby(bucket).mean()
        columns[normal_column(name)] = (
            pd.Series(np.where(normal, values, np.nan)).groupby(bucket).mean()
        )
        columns[square_column(name)] = pd.Series(values * values).groupby(bucket).mean()
    return pd.DataFrame(columns).rename_axis(BUCKET).reset_index()


def history_from_samples(
    samples: pd.DataFrame, metrics: Sequence[str], *, resolution: str | pd.Timedelta
) -> dict[str, MetricHistory]:
    """Each metric's frames from raw samples, bucketed as the database does it."""
    seconds = bucket_seconds(resolution)
    table = bucket_means(samples, metrics, bucket_seconds=seconds)
    return frames_from_buckets(table, metrics, bucket_seconds=seconds)


def without_spans(
    history: MetricHistory,
    spans: Sequence[tuple[datetime, datetime]],
    *,
    bucket_seconds: int,
) -> MetricHistory:
    """``history`` with every bucket that overlaps a span left out of ``fit`` (kept in ``observed``).

    Spans are anomaly incidents and flagged samples (aware or naive UTC): what happened there
    is not what the model should learn; the forecasters fill those buckets seasonally.
    """
    if not spans or history.fit.empty:
        return history
    half = pd.Timedelta(seconds=bucket_seconds / 2)
    ds = pd.DatetimeIndex(history.fit["ds"])
    drop = np.zeros(len(ds), dtype=bool)
    for start, end in spans:
        first, last = (
            pd.Timestamp(t).tz_localize(None)
            if pd.Timestamp(t).tzinfo is None
            else pd.Timestamp(t).tz_convert("UTC").tz_localize(None)
            for t in (start, end)
        )
        drop |= np.asarray((ds + half > first) & (ds - half <= last))
    if not drop.any():
        return history
    fit = history.fit[~drop].reset_index(drop=True)
    return MetricHistory(fit=fit, observed=history.observed, spread=history.spread)
