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

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def current_request_id() -> str:
    """The id of the request being served, or '-' outside a request."""
    return _request_id.get()


def set_request_id(request_id: str) -> contextvars.Token[str]:
    """Bind a request id to the current context (the middleware calls this)."""
    return _request_id.set(request_id)


class JsonFormatter(logging.Formatter):
    """Format a record as a single JSON line with time, level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
