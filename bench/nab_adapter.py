"""NAB adapter: the per-metric streaming detector exactly as the service runs it on a new host.

``PYTHONPATH=bench .venv/bin/python ../shared/benchmarks/anomaly/nab_eval.py nab_adapter:detect
--name autofix --nab-python /tmp/nabvenv/bin/python`` (see ../shared/benchmarks/README.md).
Defaults untouched per file; every row is scored causally as it arrives; a late row scores 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from services.trainer.anomaly.streaming import HostStream


def detect(df: pd.DataFrame) -> np.ndarray:
    stream = HostStream(("value",))
    times = pd.to_datetime(df["timestamp"]).astype("int64").to_numpy() / 1e9
    values = df["value"].astype(float).to_numpy()
    out = np.zeros(len(df))
    for i in range(len(df)):
        out[i] = stream.update(float(times[i]), {"value": float(values[i])}).score
    return out
