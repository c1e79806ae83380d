"""Structured logs: one JSON object a line, carrying the request id of the request being served.

The request id lives in a context variable set by the request middleware, so every log line written
while serving a request (ours or a library's) carries it without being passed around.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from typing import Any, TextIO

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


class LoopBatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that writes the lines logged during one turn of the event loop in one write, at
    the end of that turn: the access log has a line per request, and a write per line was a system call
    per request (a fifth of the cost of an overload refusal).

    Lines keep their order and are never held past the loop's turn: a line logged at WARNING or above,
    or from another thread, or with no loop running, is written at once, after the lines gathered so far;
    `flush` (called at exit) writes what is left."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        self._gathered: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:  # no loop runs in this thread
                loop = None
            if loop is None or record.levelno >= logging.WARNING:
                self._gathered.append(line)
                self._write_gathered()
                return
            if not self._gathered:
                loop.call_soon(self._end_of_turn)
            self._gathered.append(line)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # (always set by Handler.__init__)
            self._write_gathered()

    def _end_of_turn(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - as emit: report on stderr, never break the loop
            self.handleError(logging.makeLogRecord({"msg": "writing the gathered log lines failed"}))

    def _write_gathered(self) -> None:  # with the handler's lock held
        if self._gathered:
            text = "".join(self._gathered)
            self._gathered.clear()
            self.stream.write(text)
        super().flush()


def log_config(level: str, as_json: bool) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the app and uvicorn (uvicorn's access log is replaced by ours)."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if as_json
        else {"()": TextFormatter, "fmt": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    handler = {
        "class": "app.logs.LoopBatchedStreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
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
