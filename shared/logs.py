"""Structured log events and the log format (AUTOFIX_LOG_FORMAT=plain|json).

Usage: `configure_logging("info", "json")` once per process (the CLI does);
`event(log, "model_activated", "model %s activated", 3, model_id=3, host="web-1")`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal


def event(
    logger: logging.Logger,
    name: str,
    message: str,
    *args: object,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: object,
) -> None:
    """Log one event with structured fields: ``event(log, "model_activated", "...", model_id=3)``."""
    logger.log(level, message, *args, exc_info=exc_info, extra={"event": name, "fields": fields})


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if name:
            body["event"] = name
        body.update(_record_fields(record))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class PlainFormatter(logging.Formatter):
    """The classic line, with an event's fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        name = getattr(record, "event", None)
        if not name:
            return line
        extra = " ".join(f"{k}={v}" for k, v in _record_fields(record).items())
        head, sep, tail = line.partition("\n")  # a traceback stays below the line
        return f"{head} event={name}{' ' + extra if extra else ''}{sep}{tail}"


LogFormat = Literal["plain", "json"]


def configure_logging(level: str, fmt: LogFormat) -> None:
    """The root logger's one handler (stderr) in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
