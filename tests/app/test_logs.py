"""The log handler: the lines of one turn of the event loop in one write, in order, never held longer."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from app.logs import AccessLog, JsonFormatter, LoopBatchedStreamHandler, set_request_id


class CountingStream(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = LoopBatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_lines_of_one_loop_turn_are_written_together_at_its_end(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged

    async def turn() -> list[str]:
        for n in range(3):
            logger.info("line %d", n)
        written_during_the_turn = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0)
        return written_during_the_turn

    assert asyncio.run(turn()) == []
    assert stream.writes == ["line 0\nline 1\nline 2\n"]


def test_a_warning_is_written_at_once_after_the_lines_before_it(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged

    async def turn() -> list[str]:
        logger.info("first")
        logger.warning("second")
        return list(stream.writes)

    assert asyncio.run(turn()) == ["first\nsecond\n"]


def test_lines_from_another_thread_or_without_a_loop_are_written_at_once(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    logger.info("no loop")
    assert stream.writes == ["no loop\n"]

    async def turn() -> list[str]:
        logger.info("on the loop")
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()
        return list(stream.writes)

    assert asyncio.run(turn())[1:] == ["on the loop\nfrom a thread\n"]  # in order, the loop's line first


def test_flush_writes_what_a_loop_left_gathered(logged: tuple[logging.Logger, CountingStream]) -> None:
    logger, stream = logged
    loop = asyncio.new_event_loop()

    def last_turn() -> None:
        logger.info("last words")
        loop.stop()  # the loop ends with this turn: its end-of-turn write never runs

    try:
        loop.call_soon(last_turn)
        loop.run_forever()
    finally:
        loop.close()
    assert stream.writes == []
    logger.handlers[0].flush()  # what logging.shutdown does at exit
    assert stream.writes == ["last words\n"]


def test_a_failing_stream_at_the_end_of_a_turn_is_reported_not_raised_into_the_loop(
    logged: tuple[logging.Logger, CountingStream], capsys: pytest.CaptureFixture[str]
) -> None:
    logger, stream = logged

    def broken(text: str) -> int:
        raise OSError("the disk is full")

    stream.write = broken  # type: ignore[method-assign]

    loop_errors: list[dict] = []

    async def turn() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
        logger.info("lost")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert loop_errors == []  # nothing raised into the loop's callbacks
    assert "the disk is full" in capsys.readouterr().err  # logging's own report (raiseExceptions)


@pytest.fixture
def json_logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    """A child logger whose records reach one JSON LoopBatchedStreamHandler, as `log_config` sets up."""
    stream = CountingStream()
    handler = LoopBatchedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    parent = logging.getLogger("tests.json")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    parent.propagate = False
    try:
        yield logging.getLogger("tests.json.access"), stream
    finally:
        parent.removeHandler(handler)


def _access_lines(access: AccessLog, stream: CountingStream) -> list[dict]:
    def in_a_request() -> None:  # (in a context of its own: the id does not leak into other tests)
        set_request_id("req-1")
        refusal = [("Overloaded", "queue full")]
        access.write("POST", '/generate?q="100%"', 503, 0.0123456, "/generate", refusal)
        access.write("GET", "/healthz", 200, 0.001, "/healthz", [])

    contextvars.copy_context().run(in_a_request)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_access_line_made_directly_is_the_line_its_record_makes(
    json_logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = json_logged
    direct = _access_lines(AccessLog(logger), stream)
    stream.seek(0)
    stream.truncate()
    seen: list[logging.LogRecord] = []
    logger.addFilter(lambda record: seen.append(record) or True)  # a filter: the record path is taken
    through_records = _access_lines(AccessLog(logger), stream)
    assert len(seen) == 2 and seen[0].getMessage() == 'POST /generate?q="100%" 503'
    for line in direct + through_records:
        assert line.pop("ts").endswith("Z")
    assert direct == through_records
    assert direct[0] == {
        "level": "info",
        "logger": "tests.json.access",
        "msg": 'POST /generate?q="100%" 503',
        "request_id": "req-1",
        "status": 503,
        "duration_ms": 12.346,
        "endpoint": "/generate",
        "error": "Overloaded",
        "detail": "queue full",
    }
    assert "error" not in direct[1] and direct[1]["duration_ms"] == 1.0


def test_access_lines_are_gathered_per_loop_turn_and_follow_the_level(
    json_logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = json_logged
    access = AccessLog(logger)

    async def turn() -> list[str]:
        access.write("GET", "/a", 200, 0.001, "/a", [])
        access.write("GET", "/b", 200, 0.001, "/b", [])
        written_during_the_turn = list(stream.writes)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return written_during_the_turn

    assert asyncio.run(turn()) == []
    assert len(stream.writes) == 1 and stream.writes[0].count("\n") == 2  # one write at the turn's end
    logging.getLogger("tests.json").setLevel(logging.WARNING)
    try:
        access.write("GET", "/c", 200, 0.001, "/c", [])
    finally:
        logging.getLogger("tests.json").setLevel(logging.INFO)
    assert len(stream.writes) == 1  # below the level: nothing made, nothing written
