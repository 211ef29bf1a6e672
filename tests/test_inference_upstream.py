"""The upstream client (``sgp_infra.api.inference.upstream``) against raw asyncio servers on 127.0.0.1:
pooling and keep-alive, streaming, decoding, failures and their API errors, Retry-After, TLS."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import shutil
import ssl
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import pytest
from prometheus_client import CollectorRegistry

from sgp_infra.api.inference import InferenceSettings
from sgp_infra.api.inference.decoding import PIECE, BodyDecoder, UnsupportedEncoding
from sgp_infra.api.inference.metrics import InferenceMetrics
from sgp_infra.api.inference.settings import Timeouts
from sgp_infra.api.inference.upstream import Answer, Upstream, UpstreamError, retry_after_seconds
from test_inference_helpers import free_port, read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_BODY = b'{"ok": true}'
T = Timeouts(connect=5, read=5, hold=5, cold_start=5)


def ok(body: bytes = OK_BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


class Server:
    """A raw asyncio server in the test's loop; counts connections and closed ones."""

    def __init__(self, handler: Handler, ssl_context: Optional[ssl.SSLContext] = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.closed = 0

    async def __aenter__(self) -> Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                self.closed += 1
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()

    def url(self, path: str = "/predict", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def serve_forever(response: bytes) -> Handler:
    """Answer every request on the connection with ``response`` (keep-alive)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(response)
            await writer.drain()
    return handler


def upstream(**settings: Any) -> Upstream:
    return Upstream(InferenceSettings(**settings), InferenceMetrics(CollectorRegistry()))


async def wait_until(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return check()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


async def fails(up: Upstream, url: str, timeouts: Timeouts = T) -> UpstreamError:
    """The error one attempt and a full read end with (``up`` is closed after)."""
    try:
        answer = await up.attempt("m", url, b"{}", timeouts)
        await answer.read(up.settings.max_response_bytes)
    except UpstreamError as exc:
        return exc
    finally:
        await up.aclose()
    raise AssertionError("no error")


# --- pooling ------------------------------------------------------------------------------------


def test_sequential_calls_reuse_one_keep_alive_connection() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok())) as server:
            up = upstream()
            for _ in range(3):
                answer = await up.attempt("m", server.url(), b"{}", T)
                assert answer.status == 200 and await answer.read(1024) == OK_BODY
            assert server.connections == 1
            await up.aclose()

    run(scenario())


def test_a_connection_close_answer_is_not_reused() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok(extra=b"connection: close\r\n"))) as server:
            up = upstream()
            for _ in range(2):
                assert await (await up.attempt("m", server.url(), b"{}", T)).read(1024) == OK_BODY
            assert server.connections == 2
            await up.aclose()

    run(scenario())


def test_an_unread_body_closes_the_connection() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok(b"x" * 100_000))) as server:
            up = upstream()
            answer = await up.attempt("m", server.url(), b"{}", T)
            answer.close()
            assert await wait_until(lambda: server.closed == 1)
            assert await (await up.attempt("m", server.url(), b"{}", T)).read(1 << 20) == b"x" * 100_000
            assert server.connections == 2
            await up.aclose()

    run(scenario())


def test_a_connection_idle_past_the_keepalive_time_is_not_reused() -> None:
    """Kept below the backends' idle timeout: a connection idle longer is closed by the API, never reused."""
    async def scenario() -> None:
        async with Server(serve_forever(ok())) as server:
            up = upstream(keepalive_seconds=0.2)
            assert await (await up.attempt("m", server.url(), b"{}", T)).read(1024) == OK_BODY
            assert await wait_until(lambda: server.closed == 1, 5), "the idle connection was not closed"
            assert await (await up.attempt("m", server.url(), b"{}", T)).read(1024) == OK_BODY
            assert server.connections == 2
            await up.aclose()

    run(scenario())


def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def scenario() -> None:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(ok())  # keep-alive promised, then closed by the handler's end
            await writer.drain()

        async with Server(once) as server:
            up = upstream()
            assert await (await up.attempt("m", server.url(), b"{}", T)).read(1024) == OK_BODY
            assert await wait_until(lambda: server.closed == 1)
            await asyncio.sleep(0.05)  # the close has reached the client's side
            assert await (await up.attempt("m", server.url(), b"{}", T)).read(1024) == OK_BODY
            await up.aclose()

    run(scenario())


def test_the_request_asks_for_json_or_events_and_identity() -> None:
    async def scenario() -> None:
        seen: list[bytes] = []

        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await read_request(reader))
            writer.write(ok())
            await writer.drain()

        async with Server(record) as server:
            up = upstream()
            await (await up.attempt("m", server.url("/v1/x"), b'{"a": 1}', T)).read(1024)
            await up.aclose()
        head, _, body = seen[0].partition(b"\r\n\r\n")
        lines = head.decode().lower().split("\r\n")
        assert lines[0] == "post /v1/x http/1.1" and body == b'{"a": 1}'
        assert "content-type: application/json" in lines and "accept-encoding: identity" in lines
        assert not any(line.startswith("cookie") for line in lines)

    run(scenario())


# --- bodies -----------------------------------------------------------------------------------------


def test_a_chunked_body_arrives_chunk_by_chunk_before_the_server_finishes() -> None:
    async def scenario() -> None:
        go_on = asyncio.Event()

        async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await go_on.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()

        async with Server(stream) as server:
            up = upstream()
            answer = await up.attempt("m", server.url(), b"{}", T)
            chunks = answer.chunks()
            assert await chunks.__anext__() == b"first"  # before the server sent the rest
            go_on.set()
            assert b"".join([c async for c in chunks]) == b"second"
            answer.close()
            await up.aclose()

    run(scenario())


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
])
def test_a_compressed_answer_is_decoded_although_identity_was_asked_for(encoding: str, encode: Any) -> None:
    async def scenario() -> None:
        body = encode(OK_BODY * 1000)
        async with Server(serve_forever(ok(body, b"content-encoding: %s\r\n" % encoding.encode()))) as server:
            up = upstream()
            assert await (await up.attempt("m", server.url(), b"{}", T)).read(1 << 20) == OK_BODY * 1000
            await up.aclose()

    run(scenario())


@pytest.mark.parametrize("encoding", [b"br", b"zstd", b"gzip, gzip"])
def test_an_encoding_it_does_not_decode_is_a_protocol_error(encoding: bytes) -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok(b"xx", b"content-encoding: %s\r\n" % encoding))) as server:
            error = await fails(upstream(), server.url())
            assert (error.status, error.kind) == (502, "protocol") and "not supported" in error.detail

    run(scenario())


def test_the_decoder_never_produces_more_than_a_piece_per_step() -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))  # about 20 KiB that decode to 20 MiB
    decoder = BodyDecoder("gzip")
    total, pieces = 0, 0
    for piece in decoder.feed(bomb):
        assert len(piece) <= PIECE
        total += len(piece)
        pieces += 1
        if total > 1024 * 1024:  # the reader's cap stops here: nothing more is decoded
            break
    assert total <= 1024 * 1024 + PIECE and pieces > 1
    with pytest.raises(UnsupportedEncoding):
        BodyDecoder("br")
    assert list(BodyDecoder(None).feed(b"abc")) == [b"abc"]


def test_the_size_cap_counts_decoded_bytes() -> None:
    async def scenario() -> None:
        body = gzip.compress(b"x" * (4 * 1024 * 1024))
        async with Server(serve_forever(ok(body, b"content-encoding: gzip\r\n"))) as server:
            error = await fails(upstream(max_response_bytes=1024 * 1024), server.url())
            assert (error.status, error.kind) == (502, "too_large")

    run(scenario())


def test_an_announced_length_over_the_cap_fails_before_reading() -> None:
    async def scenario() -> None:
        async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n{")
            await writer.drain()
            await asyncio.sleep(30)

        async with Server(liar) as server:
            error = await fails(upstream(max_response_bytes=1024), server.url())
            assert (error.status, error.kind) == (502, "too_large") and "999999999" in error.detail

    run(scenario())


def test_headers_are_case_insensitive_and_keep_the_first_value() -> None:
    async def scenario() -> None:
        answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\ncontent-type: application/json\r\n"
                  b"Retry-After: 7\r\ncontent-length: 2\r\n\r\n{}")
        async with Server(serve_forever(answer)) as server:
            up = upstream()
            got: Answer = await up.attempt("m", server.url(), b"{}", T)
            assert got.headers.get("content-type") == "text/event-stream"
            assert got.headers.get("RETRY-AFTER") == "7" and got.headers.get("missing") is None
            assert await got.read(10) == b"{}"
            await up.aclose()

    run(scenario())


# --- failures ------------------------------------------------------------------------------------------


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


async def _reset_before(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.transport.abort()


async def _reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"par")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()


@pytest.mark.parametrize("handler", [_garbage, _reset_before, _reset_mid_body])
def test_broken_answers_are_protocol_errors(handler: Handler) -> None:
    async def scenario() -> None:
        async with Server(handler) as server:
            error = await fails(upstream(), server.url())
            assert (error.status, error.kind) == (502, "protocol"), error.detail

    run(scenario())


def test_read_timeouts_before_the_headers_between_chunks_and_for_the_whole_answer() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async def trickles(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(600):  # a byte every 50 ms, forever: no gap is long, the answer never ends
            writer.write(b"1\r\n \r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        short = Timeouts(connect=5, read=0.3, hold=5, cold_start=5)
        for handler in (silent, stalls, trickles):
            async with Server(handler) as server:
                started = time.monotonic()
                error = await fails(upstream(), server.url(), short)
                assert (error.status, error.kind) == (504, "read_timeout"), (handler.__name__, error.detail)
                assert time.monotonic() - started < 10

    run(scenario())


def test_connection_refused_is_a_connect_error_the_gateway_may_retry() -> None:
    async def scenario() -> None:
        error = await fails(upstream(), f"http://127.0.0.1:{free_port()}/predict")
        assert (error.status, error.kind, error.retry_after) == (503, "connect", 5)

    run(scenario())


def test_a_cancelled_attempt_drops_its_connection() -> None:
    async def scenario() -> None:
        async def hang_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await reader.read()

        async with Server(hang_until_eof) as server:
            up = upstream()
            task = asyncio.ensure_future(up.attempt("m", server.url(), b"{}", T))
            assert await wait_until(lambda: server.connections == 1)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await wait_until(lambda: server.closed == 1), "the backend still holds the connection"
            await up.aclose()

    run(scenario())


def test_status_errors_quote_the_backend_and_bound_its_retry_after() -> None:
    async def scenario() -> None:
        for status, extra, expected in ((503, b"retry-after: 7\r\n", (503, "unavailable", 7)),
                                        (503, b"retry-after: soon\r\n", (503, "unavailable", 5)),
                                        (429, b"retry-after: 99999999999\r\n", (429, "upstream_4xx", 300)),
                                        (422, b"", (422, "upstream_4xx", None)),
                                        (404, b"", (502, "upstream_4xx", None)),
                                        (302, b"location: http://elsewhere/\r\n", (502, "upstream_4xx", None)),
                                        (500, b"", (502, "upstream_5xx", None))):
            body = b'{"detail": "said so"}'
            answer = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)
            async with Server(serve_forever(answer)) as server:
                up = upstream()
                got = await up.attempt("m", server.url(), b"{}", T)
                error = await up.status_error(got, server.url())
                assert (error.status, error.kind, error.retry_after) == expected, status
                assert "said so" in error.detail
                await up.aclose()

    run(scenario())


@pytest.mark.parametrize("value, seconds", [
    ("7", 7), (" 12 ", 12), ("0", 1), ("301", 300), ("9" * 50, 300),
    ("-5", None), ("1.5", None), ("soon", None), ("", None), (None, None), ("\u0661\u0662", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1),  # in the past
])
def test_retry_after_is_parsed_and_clamped(value: Optional[str], seconds: Optional[int]) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_http_date_in_the_future() -> None:
    now = time.time()
    assert retry_after_seconds(email.utils.formatdate(now + 60, usegmt=True), now=now) in (60, 61)
    assert retry_after_seconds(email.utils.formatdate(now + 86400, usegmt=True), now=now) == 300


def test_probe_is_true_only_for_2xx() -> None:
    async def scenario() -> None:
        up = upstream()
        async with Server(serve_forever(ok())) as good, \
                Server(serve_forever(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")) as bad:
            assert await up.probe(good.url("/readyz")) is True
            assert await up.probe(bad.url("/readyz")) is False
        assert await up.probe(f"http://127.0.0.1:{free_port()}/readyz") is False
        assert await up.probe("not a url") is False
        await up.aclose()

    run(scenario())


# --- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def test_an_untrusted_certificate_is_a_tls_failure(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def scenario() -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        async with Server(serve_forever(ok()), ssl_context=server_ctx) as server:
            error = await fails(upstream(), server.url(scheme="https"))
            assert (error.status, error.kind) == (502, "protocol") and "TLS failure" in error.detail

    run(scenario())
