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
from typing import Any, TextIO, cast

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Why the request being served was refused, for its access line: (error, detail), set by the error mapping.
_refusal: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "refusal", default=None
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


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

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line (every request logs one)
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)

    def line(self, created: float, level: str, name: str, msg: str, fields: dict[str, Any]) -> str:
        """The JSON line of one entry: time, level, logger, message, request id, then `fields`."""
        entry: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": level,
            "logger": name,
            "msg": msg,
            "request_id": current_request_id(),
        }
        entry.update(fields)
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
            self._add(self.format(record) + self.terminator, record.levelno)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)

    def gather(self, line: str) -> None:
        """Add an INFO line made by the caller (`AccessLog`), as `emit` adds a formatted record."""
        with self.lock:  # type: ignore[union-attr]  # (always set by Handler.__init__)
            self._add(line + self.terminator, logging.INFO)

    def _add(self, line: str, level: int) -> None:  # with the handler's lock held
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs in this thread
            loop = None
        if loop is None or level >= logging.WARNING:
            self._gathered.append(line)
            self._write_gathered()
            return
        if not self._gathered:
            loop.call_soon(self._end_of_turn)
        self._gathered.append(line)

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


class AccessLog:
    """The access line of each request: INFO on `logger`, "METHOD PATH STATUS" with the status, the
    duration, the endpoint and, for a refusal, the domain error and its detail as fields.

    With the set-up the service installs (`log_config`: JSON lines through one
    `LoopBatchedStreamHandler`) the line is made directly, without a LogRecord and the logging
    machinery around it, which were about a third of the CPU of a refused request. Any other set-up (text
    lines, more handlers, filters) gets a LogRecord through the logger as usual: the same line."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def write(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        endpoint: str,
        refusal: list[tuple[str, str]],
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        msg = f"{method} {path} {status}"
        fields: dict[str, Any] = {
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "endpoint": endpoint,
        }
        if refusal:  # a domain error's name and detail (app/errors.py), on this one line
            fields["error"], fields["detail"] = refusal[-1]
        handler = _only_json_handler(logger)
        if handler is None:
            logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, msg, (), None, extra=fields))
            return
        formatter = cast(JsonFormatter, handler.formatter)
        handler.gather(formatter.line(time.time(), "info", logger.name, msg, fields))


def _only_json_handler(logger: logging.Logger) -> LoopBatchedStreamHandler | None:
    """The handler a record of `logger` would reach, when that is one JSON `LoopBatchedStreamHandler`
    and no filter is on the way (what `log_config` sets up); else None."""
    if logger.filters:
        return None
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers += current.handlers
        if not current.propagate:
            break
        current = current.parent
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is not LoopBatchedStreamHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


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
