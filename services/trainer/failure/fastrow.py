"""One row through a booster by LightGBM's single-row C entry point (no per-call setup).

Usage: ``row = RowPredictor(booster, n_features); p = row(x)`` with ``x`` a float64 row.

``Booster.predict`` builds a predictor, copies its parameters and checks its input on every
call: about 20 us idle and 60-80 us on a busy machine, for trees that take 2 us. This keeps
one ``FastConfig`` per booster (``LGBM_BoosterPredictForMatSingleRowFastInit``) and reads
the same numbers (tested against ``Booster.predict``). A lock per booster: LightGBM keeps one
single-row predictor per OpenMP thread, and every Python thread is OpenMP thread 0.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import lightgbm as lgb
import numpy as np
from lightgbm import basic

from shared.arrays import FloatArray

_PREDICT_NORMAL = 0  # probabilities, as Booster.predict gives
_FLOAT64 = 1


class RowPredictor:
    """Probability of one row from one booster; thread-safe."""

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        lib: Any = vars(basic)["_LIB"]  # the loaded C library (not re-exported by name)
        self._lib = lib
        self._booster = booster  # keeps the handle alive as long as this
        self._n = n_features
        self._handle = ctypes.c_void_p()
        iterations = booster.best_iteration if booster.best_iteration > 0 else -1
        basic._safe_call(
            lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(iterations),
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(n_features),
                basic._c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._out = np.zeros(1)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._lock = threading.Lock()

    def __call__(self, row: FloatArray) -> float:
        x = np.ascontiguousarray(row, dtype=np.float64)
        if x.shape != (self._n,):
            raise ValueError(f"a row of {self._n} features expected, got shape {x.shape}")
        with self._lock:
            basic._safe_call(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle,
                    x.ctypes.data_as(ctypes.c_void_p),
                    ctypes.byref(self._out_len),
                    self._out_ptr,
                )
            )
            return float(self._out[0])

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value is not None:
            self._lib.LGBM_FastConfigFree(handle)
