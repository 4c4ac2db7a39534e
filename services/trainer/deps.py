"""The trainer's request dependencies, as `Annotated` aliases for endpoint parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.incidents import Notifier


def notifier(request: Request) -> Notifier:
    value: Notifier = request.app.state.notifier
    return value


NotifierDep = Annotated[Notifier, Depends(notifier)]
