"""The answer to one inference call, as an ASGI response: admission, the work, the reply,
disconnects and accounting, each in one place.

A route checks the request (auth, body, model, shape) and returns an
:class:`InferenceCall` holding the work to do; Starlette then calls it like
any response, and it:

1. admits the call (the 429 cap) and counts it in flight;
2. runs the work (hold, forward, read) in one task while a second task waits
   for the client to disconnect; if the client leaves first, that task cancels
   the work, and when the work ends the waiting task is cancelled (nothing
   waits for it: no extra loop turn per call);
3. sends the finished JSON answer, streams the backend's events as they
   arrive, or sends the error in the API's JSON shape;
4. counts the outcome once: the status sent, or 499 (nginx's convention, never
   sent) when the client left first, which also cancels the backend request.

Two tasks rather than cancelling the request's own task: the work is
cancelled by cancelling its task, which needs no ``Task.uncancel`` (Python
3.11+) and never leaves a cancellation pending on the server's task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable, Callable, NamedTuple, Union

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ...catalog import Model
from ..errors import api_error
from .gateway import Gateway, Slot
from .protocols import BadBackendBody
from .streams import sse_error
from .upstream import Answer, UpstreamError

log = logging.getLogger("sgp_infra.api.inference")

#: The status logged and counted for a call whose client left (nginx's convention); never sent.
CLIENT_GONE = 499
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Streamed(NamedTuple):
    """A streamed reply: the backend answer it comes from and the bytes to send, as they come."""

    upstream: Answer
    chunks: AsyncIterator[bytes]
    media_type: str


#: The work of a call: a finished response, or a stream to relay.
Work = Callable[[], Awaitable[Union[Response, Streamed]]]


def upstream_error_response(exc: UpstreamError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return api_error(exc.status, exc.detail, headers=headers)


def failure_response(slot: Slot, exc: Union[UpstreamError, BadBackendBody]) -> Response:
    """The answer to a call that failed with ``exc``, its slot finished with the failure's status and kind."""
    if isinstance(exc, UpstreamError):
        slot.finish(exc.status, exc.kind)
        return upstream_error_response(exc)
    slot.finish(502, "bad_response")
    return api_error(502, f"model '{slot.model.name}' answered a body of the wrong shape: {exc}")


async def _no_receive() -> Message:
    """``receive`` for responses sent by the work task: the disconnect task owns the real one."""
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}  # pragma: no cover - never reached


class InferenceCall(Response):
    """One inference call to ``model``: see the module docstring."""

    def __init__(self, gateway: Gateway, model: Model, operation: str, work: Work):
        super().__init__(status_code=200)
        self.gateway = gateway
        self.model = model
        self.operation = operation
        self.work = work
        self.started = False  # the answer's first bytes were handed to the server
        self.client_left = False  # the client disconnected before the answer was complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            slot = self.gateway.admit(self.model, self.operation)
        except UpstreamError as exc:
            await upstream_error_response(exc)(scope, receive, send)
            return
        reply = asyncio.ensure_future(self._reply(slot, scope, send))
        watcher = asyncio.ensure_future(self._watch(receive, reply))
        try:
            await reply
        except asyncio.CancelledError:
            if not self.client_left:  # cancelled from outside (the server is shutting down): so is the work
                watcher.cancel()
                slot.finish(500, "cancelled")
                raise
        except BaseException:
            if not self.client_left:  # a bug in the work: to the 500 handler (the slot was finished)
                watcher.cancel()
                raise
            log.debug("an inference call failed while being cancelled", exc_info=True)
        watcher.cancel()  # ends at its next step; nothing waits for it
        if not self.client_left:
            return
        slot.finish(CLIENT_GONE, "client_disconnect")
        if not self.started:  # sent nowhere (the connection is gone), but logged and counted as 499
            await Response(status_code=CLIENT_GONE)(scope, receive, send)

    async def _watch(self, receive: Receive, reply: asyncio.Future[None]) -> None:
        """Wait for the client to disconnect (the request body was read already); if the reply is still
        under way then, the client left first: cancel it, and the backend request with it."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # noqa: BLE001 - the server's receive failed: nothing more to watch
            log.debug("watching an inference call's client failed", exc_info=True)
            return
        if not reply.done():
            self.client_left = True
            reply.cancel()

    async def _reply(self, slot: Slot, scope: Scope, send: Send) -> None:
        try:
            result = await self.work()
        except (UpstreamError, BadBackendBody) as exc:
            response = failure_response(slot, exc)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                slot.finish(500, type(exc).__name__)
            raise
        else:
            if isinstance(result, Streamed):
                await self._stream(slot, result, send)
                return
            response = result
            slot.finish(response.status_code)
        self.started = True
        await response(scope, _no_receive, send)

    async def _stream(self, slot: Slot, streamed: Streamed, send: Send) -> None:
        """Relay ``streamed`` chunk by chunk; a failure mid-stream becomes an SSE ``error`` event."""
        headers = {**STREAM_HEADERS, "content-type": streamed.media_type}
        try:
            self.started = True
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
            try:
                async for chunk in streamed.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                slot.finish(200, exc.kind)
                await send({"type": "http.response.body", "body": sse_error(exc.status, exc.detail),
                            "more_body": True})
            except BadBackendBody as exc:
                slot.finish(200, "bad_response")
                await send({"type": "http.response.body", "more_body": True, "body": sse_error(
                    502, f"model '{slot.model.name}' streamed an event of the wrong shape: {exc}")})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            slot.finish(200)
        except OSError:  # the connection broke under a write: the client is gone
            slot.finish(CLIENT_GONE, "client_disconnect")
        finally:
            # Runs even when the client left before the first chunk (the generator never started).
            try:
                await streamed.chunks.aclose()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - closing a broken stream must not fail the call
                log.debug("closing an inference stream failed", exc_info=True)
            streamed.upstream.close()


def stream_media_type(answer: Answer, default: str = "text/event-stream") -> str:
    """The content type of a raw stream relayed as it is."""
    return answer.headers.get("content-type", default) or default


__all__ = ["CLIENT_GONE", "InferenceCall", "Streamed", "Work", "failure_response", "upstream_error_response",
           "stream_media_type"]
