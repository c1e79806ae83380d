"""Structured logs: one JSON object a line, carrying the request id of the request being served.

The request id lives in a context variable set by the request middleware, so every log line written
while serving a request (ours or a library's) carries it without being passed around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Why the request being served was refused, for its access line: (error, detail), set by the error mapping.
_refusal: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "refusal", default=None
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def access_record(logger: logging.Logger, msg: str, args: tuple, extra: dict[str, Any]) -> logging.LogRecord:
    """An INFO record made directly, without the caller lookup `Logger.info` does (a stack walk per
    call; the access log writes one line per request)."""
    record = logger.makeRecord(logger.name, logging.INFO, "", 0, msg, args, None, extra=extra)
    return record


def current_request_id() -> str:
    """The id of the request being served, or '-' outside a request."""
    return _request_id.get()


def set_request_id(request_id: str) -> contextvars.Token[str]:
    """Bind a request id to the current context (the middleware calls this)."""
    return _request_id.set(request_id)


def collect_refusal() -> list[tuple[str, str]]:
    """Start collecting the refusal of the request being served (the middleware calls this and puts
    what `note_refusal` added on the request's access line)."""
    refusal: list[tuple[str, str]] = []
    _refusal.set(refusal)
    return refusal


def note_refusal(error: str, detail: str) -> bool:
    """Record why the request being served is refused; False when no access line will carry it."""
    refusal = _refusal.get()
    if refusal is None:
        return False
    refusal.append((error, detail))
    return True


class JsonFormatter(logging.Formatter):
    """Format a record as a single JSON line with time, level, logger, message, request id and extras."""

    _second = -1
    _stamp = ""

    def _timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line (every request logs one)
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": current_request_id(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, still with the request id."""

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = current_request_id()
        return super().format(record)


def log_config(level: str, as_json: bool) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the app and uvicorn (uvicorn's access log is replaced by ours)."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if as_json
        else {"()": TextFormatter, "fmt": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "app": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(level: str, as_json: bool) -> None:
    """Apply `log_config` to this process."""
    import logging.config

    logging.config.dictConfig(log_config(level, as_json))
