"""One error hierarchy: domain code raises these, the web layer renders them as `{"detail": ...}`."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """A domain error with the HTTP status it maps to: `raise NotFound("model 3 not found")`."""

    status_code = 500

    def __init__(
        self,
        detail: Any,
        status_code: int | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers  # sent with the answer, e.g. Retry-After
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


# Seconds a client should wait before retrying after a 503 (a service or the database away;
# a crashed service is restarted within seconds).
RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(AppError):
    """503; says Retry-After unless told otherwise."""

    status_code = 503

    def __init__(self, detail: Any, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers or {"Retry-After": str(RETRY_AFTER_SECONDS)})
