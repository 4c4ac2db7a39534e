"""Timestamps as the anomaly features count them: UTC epoch seconds, exact to the microsecond.

Usage: ``epoch_seconds(frame["timestamp"])``, ``frame_times(frame)``, ``to_epoch(ts)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shared.arrays import FloatArray

_EPOCH = pd.Timestamp(0, tz="UTC")
_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_seconds(timestamps: Any) -> FloatArray:
    """UTC epoch seconds of timestamps (naive values are taken as UTC)."""
    idx = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True))
    return np.asarray(idx.as_unit("us").asi8, dtype=np.float64) / 1e6


def frame_times(frame: pd.DataFrame) -> FloatArray:
    """Epoch seconds of a frame's rows, from its 'timestamp' column or DatetimeIndex."""
    if "timestamp" in frame.columns:
        return epoch_seconds(frame["timestamp"])
    if isinstance(frame.index, pd.DatetimeIndex):
        return epoch_seconds(frame.index)
    raise ValueError("frame needs a 'timestamp' column or a DatetimeIndex")


def to_epoch(ts: datetime | pd.Timestamp | str | float) -> float:
    """UTC epoch seconds of one timestamp (naive: UTC), exact to the microsecond."""
    if isinstance(ts, int | float):
        return float(ts)
    if type(ts) is datetime:  # plain datetime (not pandas'): microseconds, exact and fast
        aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        return float((aware - _EPOCH_DT) // _MICROSECOND) / 1e6
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    micros = (stamp - _EPOCH) // pd.Timedelta(microseconds=1)
    return float(micros) / 1e6
