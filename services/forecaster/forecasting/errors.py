"""The forecaster's domain errors: bad history, a stored model that cannot be trusted or read.

Usage: `except ForecastError as exc: failures[metric] = str(exc)`.
"""

from __future__ import annotations


class ForecastError(ValueError):
    """Base class for the forecaster's domain errors."""


class InsufficientHistoryError(ForecastError):
    """The history has too few usable points to fit a model."""


class ModelIntegrityError(ForecastError):
    """A stored model's checksum does not match its payload."""


class UnsupportedModelFormat(ForecastError):
    """A stored model written in another format version than this code reads."""
