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
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_json_logging(level: int = logging.INFO, *, access_log: bool = True) -> None:
    """Send the service's and uvicorn's logs to stderr as JSON lines.

    ``access_log=False`` silences the per-request line (logger
    ``sgp_infra.api.access``); every other log line is unchanged.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("sgp_infra", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if access_log else logging.WARNING)
