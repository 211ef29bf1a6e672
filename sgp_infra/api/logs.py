"""Structured JSON logs: one object per line, for the cluster's log pipeline.

Stock :mod:`logging` throughout: :class:`JsonFormatter` turns each record
into one JSON object (its ``extra`` fields become keys), and
:func:`configure_json_logging` puts it on the service's and uvicorn's
loggers.  Request headers are never logged (they carry the API key); the
per-request line (``access_log.log_request``, logger
``sgp_infra.api.access``) carries method, path, route template, status and
duration.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

#: The per-request line's logger (written by ``access_log.log_request``).
ACCESS_LOGGER = "sgp_infra.api.access"

#: Record attributes that are not ``extra`` fields (uvicorn's ``color_message`` is its terminal copy of the message).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName",
                                                                         "color_message"}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: ``time`` (UTC, milliseconds), ``level``, ``logger``, ``message``,
    then the record's ``extra`` fields, then ``error``/``traceback`` for an exception."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second = int(record.created)
        if second != self._second:  # the date and time to the second, formatted once per second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record),
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

    The JSON lines carry no thread or process fields, so ``logging`` is told
    not to collect them (the public ``log*`` flags of the Logging HOWTO's
    "Optimization" section).
    """
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
