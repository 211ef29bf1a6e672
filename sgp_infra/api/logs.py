"""Structured JSON logs: one object per line, for the cluster's log pipeline.

Request headers are never logged (they carry the API key); the access log
line carries method, path, route template, status and duration.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

#: The per-request line's logger (written by ``metrics.MetricsMiddleware``).
ACCESS_LOGGER = "sgp_infra.api.access"

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    _second: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        # strftime once per second, not once per line (the access log writes one per request)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key[0] != "_":
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_json_logging(level: int = logging.INFO, *, access_log: bool = True) -> None:
    """Send the service's and uvicorn's logs to stderr as JSON lines.

    ``access_log=False`` silences the per-request line (logger
    ``sgp_infra.api.access``); every other log line is unchanged.

    The JSON lines carry no source location, thread or process fields, so
    ``logging`` is told not to collect them (``logging._srcfile = None`` is
    the documented way to skip the per-record stack walk); this more than
    halves the cost of a line.
    """
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("sgp_infra", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if access_log else logging.WARNING)
