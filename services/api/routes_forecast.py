"""Gateway routes of the forecaster: /api/ml/forecast*, /api/ml/train/forecaster."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/ml")
