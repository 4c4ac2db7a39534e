"""A metric's history as bucket means, the frames Prophet fits: from database rows or raw samples.

Usage: `frames_from_buckets(table, metrics, bucket_seconds=900)` on `bucketed_history` rows, or
`history_from_samples(samples, metrics, resolution="15min")` on a DataFrame of samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

BUCKET = "bucket"
SAMPLES = "samples"


def normal_column(metric: str) -> str:
    """The column of a metric's mean over samples labelled normal."""
    return f"{metric}__normal"


def bucket_seconds(resolution: str | pd.Timedelta) -> int:
    return int(pd.Timedelta(resolution).total_seconds())


@dataclass(frozen=True, slots=True)
class MetricHistory:
    """One metric's bucket means as Prophet ``ds``/``y`` frames, ``ds`` the bucket middle (naive UTC).

    ``fit`` holds the means of samples labelled normal (what the model fits), ``observed`` the
    means of every sample (what calibrates the interval and what a holdout is scored on).
    Empty buckets are absent, not filled: Prophet fits irregular series directly.
    """

    fit: pd.DataFrame
    observed: pd.DataFrame


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
        out[name] = MetricHistory(fit=fit, observed=observed)
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
    return pd.DataFrame(columns).rename_axis(BUCKET).reset_index()


def history_from_samples(
    samples: pd.DataFrame, metrics: Sequence[str], *, resolution: str | pd.Timedelta
) -> dict[str, MetricHistory]:
    """Each metric's frames from raw samples, bucketed as the database does it."""
    seconds = bucket_seconds(resolution)
    table = bucket_means(samples, metrics, bucket_seconds=seconds)
    return frames_from_buckets(table, metrics, bucket_seconds=seconds)
