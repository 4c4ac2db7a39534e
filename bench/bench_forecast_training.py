"""CPU and wall time of what a training run computes per metric, in process, on this tree's code.

    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_forecast_training
    PYTHONPATH=/path/to/older/tree .venv/bin/python /path/to/this/file   # the code before

Per metric, the jobs the service's training runs on its worker processes: since issue 10 one
`fit_job` (backtest, choice, final fit, trend, forecast grid) with the catalogue's bounds;
before it, `fit_job` and `evaluate_job` (a second fit without the last day). The 14 metrics run
one after the other in this process: the CPU seconds are what two worker processes share, so on
an idle 2-core machine a training run takes about half of them, plus the SQL and the storing.
CPU time (this process and CmdStan's child processes) is reported because wall time moves two to three times on a shared machine.

Data: SyntheticDataGenerator(seed=42), 30 days of one-minute samples from Monday 2025-01-06.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from services.forecaster.forecasting import jobs
from services.forecaster.forecasting.history import history_from_samples
from services.forecaster.forecasting.prediction import forecast_grid
from services.forecaster.forecasting.prophet_model import DEFAULT_CONFIG
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

try:  # issue 10: one job per metric, bounds passed explicitly
    from services.forecaster.forecasting.config import for_metric

    NEW = True
except ImportError:  # before: a fit and a holdout evaluation per metric
    NEW = False

START = datetime(2025, 1, 6, tzinfo=UTC)


def cpu_seconds() -> float:
    """This process's CPU time and its finished children's (CmdStan runs as a child process)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    samples = SyntheticDataGenerator(seed=42).generate_full_training_set(30, start=START)
    histories = history_from_samples(samples, METRIC_NAMES, resolution=DEFAULT_CONFIG.resolution)
    grid = forecast_grid(samples["timestamp"].max(), step=DEFAULT_CONFIG.step, hours=25)
    jobs.warm()
    cpu, wall = cpu_seconds(), time.perf_counter()
    for name in METRIC_NAMES:
        if NEW:
            jobs.fit_job(name, histories[name], for_metric(DEFAULT_CONFIG, name), grid)
        else:
            jobs.fit_job(name, histories[name], DEFAULT_CONFIG, grid)
            jobs.evaluate_job(name, histories[name], DEFAULT_CONFIG)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    code = "issue 10 (backtest)" if NEW else "before (fit + holdout evaluation)"
    print(f"{code}: 14 metrics x 30 days, one process: CPU {cpu:.2f} s, wall {wall:.2f} s")


if __name__ == "__main__":
    main()
