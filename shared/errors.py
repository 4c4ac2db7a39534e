"""One error hierarchy: domain code raises these, the web layer renders them as `{"detail": ...}`."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """A domain error with the HTTP status it maps to: `raise NotFound("model 3 not found")`."""

    status_code = 500

    def __init__(self, detail: Any, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class BadRequest(AppError):
    status_code = 400


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class Unprocessable(AppError):
    status_code = 422


class ServiceUnavailable(AppError):
    status_code = 503
