"""The per-request access line: written straight to the JSON handler when that
is the only place it goes, through ``logging`` otherwise, and the same line
either way."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any, Iterator

import pytest

from sgp_infra.api import logs

FIELDS = {"method": "POST", "path": "/v4/models/echo/completions",
          "route": "/v4/models/{model_deployment_id}/completions", "status": 200, "duration_ms": 1.234}


@pytest.fixture()
def json_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """``configure_json_logging`` onto a buffer; the loggers it touches are restored afterwards."""
    names = ("sgp_infra", "uvicorn", "uvicorn.error", logs.ACCESS_LOGGER)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    saved_srcfile = logging._srcfile  # type: ignore[attr-defined]
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    logs.configure_json_logging()
    try:
        yield buf
    finally:
        for n, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        logging._srcfile = saved_srcfile  # type: ignore[attr-defined]


def json_handler_only() -> None:
    """As in ``serve``: the JSON handler alone on ``sgp_infra`` (pytest attaches its capture handlers
    to it for the test's call phase)."""
    root = logging.getLogger("sgp_infra")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logs.JsonHandler)]


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_direct_line_equals_the_logging_line(json_logging: io.StringIO) -> None:
    access = logging.getLogger(logs.ACCESS_LOGGER)
    json_handler_only()
    assert logs._only_json_handler(access) is not None  # the direct path is taken
    access.info("request", extra=FIELDS)
    logs.access_line(FIELDS)
    through_logging, direct = json_logging.getvalue().splitlines()
    a, b = json.loads(through_logging), json.loads(direct)
    assert list(a) == list(b) == ["time", "level", "logger", "message", *FIELDS]
    assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}
    assert b["time"].endswith("Z") and len(b["time"]) == len("2026-01-01T00:00:00.000Z")


def test_access_line_can_be_switched_off(json_logging: io.StringIO) -> None:
    logging.getLogger(logs.ACCESS_LOGGER).setLevel(logging.WARNING)
    logs.access_line(FIELDS)
    assert json_logging.getvalue() == ""


def test_any_other_handler_or_filter_gets_the_record_through_logging(json_logging: io.StringIO,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    access = logging.getLogger(logs.ACCESS_LOGGER)
    json_handler_only()
    extra = logging.StreamHandler(io.StringIO())
    access.addHandler(extra)
    try:
        assert logs._only_json_handler(access) is None
        logs.access_line(FIELDS)
        assert extra.stream.getvalue().strip() == "request"  # type: ignore[attr-defined]
        assert lines(json_logging)[0]["status"] == 200  # and the JSON handler still got it
    finally:
        access.removeHandler(extra)

    dropped: list[str] = []

    def drop(record: logging.LogRecord) -> bool:
        dropped.append(record.getMessage())
        return False

    access.addFilter(drop)
    try:
        logs.access_line(FIELDS)
    finally:
        access.removeFilter(drop)
    assert dropped == ["request"] and len(lines(json_logging)) == 1  # the filter was honoured


def test_without_json_logging_the_line_is_an_ordinary_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=logs.ACCESS_LOGGER):
        logs.access_line(FIELDS)
    record = next(r for r in caplog.records if r.name == logs.ACCESS_LOGGER)
    assert record.getMessage() == "request" and record.status == 200  # type: ignore[attr-defined]


class CountingStream(io.StringIO):
    """A log stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_in_an_event_loop_one_turns_lines_are_written_together(json_logging: io.StringIO) -> None:
    json_handler_only()
    handler = logs._only_json_handler(logging.getLogger(logs.ACCESS_LOGGER))
    assert handler is not None
    stream = handler.stream = CountingStream()
    seen: list[tuple[int, str]] = []

    async def main() -> None:
        for status in (200, 404, 499):
            logs.access_line({**FIELDS, "status": status})
        seen.append((stream.writes, stream.getvalue()))  # still waiting: the turn has not ended
        await asyncio.sleep(0)
        seen.append((stream.writes, stream.getvalue()))
        logs.access_line({**FIELDS, "status": 201})  # the next turn starts a new batch
        await asyncio.sleep(0)

    asyncio.run(main())
    assert seen[0] == (0, "")
    writes, text = seen[1]
    assert writes == 1 and [json.loads(line)["status"] for line in text.splitlines()] == [200, 404, 499]
    assert stream.writes == 2 and [json.loads(line)["status"] for line in stream.getvalue().splitlines()] == \
        [200, 404, 499, 201]


def test_lines_left_by_a_stopped_loop_are_flushed(json_logging: io.StringIO) -> None:
    """A loop that stops before its turn ends (a server shutting down) loses nothing:
    ``serve`` flushes when the server returns, and so does the interpreter at exit."""
    json_handler_only()
    loop = asyncio.new_event_loop()

    def last_turn() -> None:
        logs.access_line(FIELDS)
        loop.stop()  # this turn is the loop's last: the flush it scheduled never runs

    try:
        loop.call_soon(last_turn)
        loop.run_forever()
    finally:
        loop.close()
    assert json_logging.getvalue() == ""  # the loop closed before running the scheduled flush
    logs.flush_access_lines()
    assert [line["status"] for line in lines(json_logging)] == [200]


def test_a_new_handler_mid_turn_takes_the_next_turns_lines(json_logging: io.StringIO) -> None:
    """Logging reconfigured while lines wait: the turn's lines go to the handler its first line found
    (only that line looks the handler up), the next turn's to the new one; none is lost or reordered."""
    json_handler_only()
    first = json_logging
    later = io.StringIO()

    async def main() -> None:
        logs.access_line({**FIELDS, "status": 200})
        root = logging.getLogger("sgp_infra")
        replacement = logs.JsonHandler(later)
        replacement.setFormatter(logs.JsonFormatter())
        root.handlers[:] = [replacement]
        logs.access_line({**FIELDS, "status": 404})
        await asyncio.sleep(0)
        logs.access_line({**FIELDS, "status": 201})
        await asyncio.sleep(0)

    asyncio.run(main())
    assert [line["status"] for line in lines(first)] == [200, 404]
    assert [json.loads(line)["status"] for line in later.getvalue().splitlines()] == [201]


def test_a_line_without_fields_is_still_json(json_logging: io.StringIO) -> None:
    json_handler_only()
    logs.access_line({})
    line = lines(json_logging)[0]
    assert {k: v for k, v in line.items() if k != "time"} == {"level": "info", "logger": logs.ACCESS_LOGGER,
                                                               "message": "request"}

