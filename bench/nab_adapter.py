"""NAB adapter: the per-metric streaming detector exactly as the service runs it on a new host.

``PYTHONPATH=bench .venv/bin/python ../shared/benchmarks/anomaly/nab_eval.py nab_adapter:detect
--name autofix --nab-python /tmp/nabvenv/bin/python`` (see ../shared/benchmarks/README.md).
Defaults untouched per file; every row is scored causally as it arrives; a late row scores 0.
The score is the host's surprise (-log10 p) mapped into [0, 1) by s / (s + 5): the same
order as the service's likelihood, without its float64 saturation at 1.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from services.trainer.anomaly.streaming import HostStream

# comparisons only: StreamConfig overrides, "key=value key=value" (the figures use none)
_OVERRIDES = os.environ.get("NAB_STREAM_CONFIG", "").split()


def detect(df: pd.DataFrame) -> np.ndarray:
    from bench.bench_stream_smd import config_from

    stream = HostStream(("value",), config_from(_OVERRIDES))
    stamps = pd.to_datetime(df["timestamp"]).astype("datetime64[ns]").astype("int64")
    times = stamps.to_numpy() / 1e9
    values = df["value"].astype(float).to_numpy()
    out = np.zeros(len(df))
    for i in range(len(df)):
        s = stream.update(float(times[i]), {"value": float(values[i])}).surprise
        out[i] = s / (s + 5.0)
    return out
