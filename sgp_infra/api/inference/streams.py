"""Incremental splitting of backend streams into events, and SSE encoding.

Backends stream either server-sent events (SGP, vLLM) or newline-delimited
JSON (Cohere).  The proxy forwards each event as soon as its last byte
arrives, so it keeps at most one partial event in memory; an event larger than
``max_event`` bytes means a broken backend and stops the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import orjson

DEFAULT_MAX_EVENT = 8 * 1024 * 1024


class EventTooLarge(ValueError):
    """A single stream event exceeded the size limit."""


@dataclass
class Event:
    data: str
    event: Optional[str] = None


class EventSplitter:
    """Feed raw bytes, get complete events (SSE or JSON lines)."""

    def __init__(self, sse: bool, max_event: int = DEFAULT_MAX_EVENT):
        self.sse = sse
        self.max_event = max_event
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        sep = b"\n\n" if self.sse else b"\n"
        start = 0
        while True:
            end = buf.find(sep, start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + len(sep)
            event = self._parse(block)
            if event is not None:
                yield event
        self._buf = buf[start:]
        if len(self._buf) > self.max_event:
            self._buf = b""  # not kept alive by the error's traceback
            raise EventTooLarge(f"a stream event is larger than {self.max_event} bytes")

    def flush(self) -> Iterator[Event]:
        """The last event if the stream ended without its terminator."""
        rest, self._buf = self._buf, b""
        if rest.strip():
            event = self._parse(rest)
            if event is not None:
                yield event

    def _parse(self, block: bytes) -> Optional[Event]:
        text = block.decode("utf-8", errors="replace")
        if not self.sse:
            return Event(text) if text.strip() else None
        data: list[str] = []
        name: Optional[str] = None
        for line in text.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if key == "data":
                data.append(value)
            elif key == "event":
                name = value or None
        if not data and name is None:
            return None
        return Event("\n".join(data), name)


def sse(body: Any) -> bytes:
    """One SSE event carrying ``body`` as JSON."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


def sse_error(status: int, detail: str) -> bytes:
    """An ``error`` event: how a stream that already started reports a failure.

    The v4 client raises an API error for it; the error body has the API's
    usual shape.
    """
    from ..errors import error_code

    return b"event: error\ndata: " + orjson.dumps(
        {"status": status, "error": error_code(status), "detail": detail}) + b"\n\n"
