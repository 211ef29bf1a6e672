"""The per-request access line: one JSON object per request, through stock ``logging``."""

from __future__ import annotations

import io
import json
import logging
from typing import Any, Iterator

import httpx
import pytest

from api_helpers import ACME_KEY, API_KEYS, make_catalog, running
from sgp_infra.api import create_app, logs

NAMES = ("sgp_infra", "uvicorn", "uvicorn.error", logs.ACCESS_LOGGER)


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """The loggers ``configure_json_logging`` touches, restored afterwards."""
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in NAMES}
    try:
        yield
    finally:
        for n, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def json_logging(monkeypatch: pytest.MonkeyPatch, *, access_log: bool = True) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    logs.configure_json_logging(access_log=access_log)
    return buf


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(make_catalog(extra_acme=2, extra_other=0), api_keys=API_KEYS, include_inference=False)


def test_one_json_line_per_request_with_the_route_template(restore_logging: None, monkeypatch: pytest.MonkeyPatch,
                                                           app: Any) -> None:
    buf = json_logging(monkeypatch)
    with running(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v4/models/echo", headers={"x-api-key": ACME_KEY}).status_code == 200
        assert client.get("/v4/models/echo").status_code == 401
        assert client.get("/nope", headers={"x-api-key": ACME_KEY}).status_code == 404
    access = [line for line in lines(buf) if line["logger"] == logs.ACCESS_LOGGER]
    assert [(a["path"], a["route"], a["status"]) for a in access] == [
        ("/v4/models/echo", "/v4/models/{model_id}", 200),
        ("/v4/models/echo", "unmatched", 401),  # refused at the head, before routing
        ("/nope", "unmatched", 404),
    ]
    first = access[0]
    assert list(first) == ["time", "level", "logger", "message", "method", "path", "route", "status", "duration_ms"]
    assert first["message"] == "request" and first["level"] == "info" and first["method"] == "GET"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-01T00:00:00.000Z")
    assert ACME_KEY not in buf.getvalue()  # headers are never logged


def test_no_access_log_drops_only_the_request_line(restore_logging: None, monkeypatch: pytest.MonkeyPatch,
                                                   app: Any) -> None:
    buf = json_logging(monkeypatch, access_log=False)
    with running(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200
    logging.getLogger("sgp_infra.api").warning("still here", extra={"detail": 1})
    assert [(line["logger"], line["message"]) for line in lines(buf)] == [("sgp_infra.api", "still here")]


def test_the_line_is_an_ordinary_log_record(caplog: pytest.LogCaptureFixture, app: Any) -> None:
    """Any handler or filter applies: the line goes through ``logging`` like every other."""
    with caplog.at_level(logging.INFO, logger=logs.ACCESS_LOGGER), running(app) as url, \
            httpx.Client(base_url=url) as client:
        client.get("/healthz")
    [record] = [r for r in caplog.records if r.name == logs.ACCESS_LOGGER]
    assert record.getMessage() == "request" and record.status == 200  # type: ignore[attr-defined]
    assert record.route == "/healthz"  # type: ignore[attr-defined]


def test_an_exception_is_logged_with_its_traceback() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("sgp_infra.api").makeRecord(
            "sgp_infra.api", logging.ERROR, __file__, 1, "unhandled error", (), __import__("sys").exc_info(),
            extra={"path": "/x"})
    line = json.loads(formatter.format(record))
    assert line["error"] == "ValueError" and "boom" in line["traceback"] and line["path"] == "/x"
