"""Gateway routes of anomaly detection: /api/ml/train/anomaly-detector, predict, scores."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/ml")
