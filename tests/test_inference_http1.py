"""The proxy's HTTP/1.1 upstream client (``sgp_infra.api.inference.http1``)
against real loopback servers that behave and misbehave on the wire.

Each test runs its own event loop; servers are raw ``asyncio`` servers in that
loop (or ``FaultServer`` threads), so what is asserted is what went over the
socket: connections opened and reused, bytes delivered before the server
finished, resets, garbage, hangs.  No assertion depends on timing beyond
"a timeout fires at all".
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import pytest

from sgp_infra.api.inference import InferenceSettings
from sgp_infra.api.inference.http1 import (HIGH_WATER, ConnectError, Connection, Pool, ProtocolError, ReadTimeout,
                                           Target)
from sgp_infra.api.inference.metrics import InferenceMetrics
from sgp_infra.api.inference.proxy import Forwarder, UpstreamError
from sgp_infra.api.inference.settings import Timeouts
from prometheus_client import CollectorRegistry

from test_inference_helpers import free_port, read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_BODY = b'{"ok": true}'


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
        self.requests: list[bytes] = []

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


def serve_forever(response: bytes, requests: Optional[list[bytes]] = None) -> Handler:
    """Answer every request on the connection with ``response`` (keep-alive)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if requests is not None:
                requests.append(request)
            writer.write(response)
            await writer.drain()
    return handler


async def post(pool: Pool, url: str, body: bytes = b"{}", timeout: float = 5.0) -> Connection:
    """Send one POST and wait for its headers (the way the Forwarder does: a failure drops the connection)."""
    target = pool.target(url)
    conn = await pool.acquire(target, timeout)
    conn.send(b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n\r\n%s"
              % (target.path, target.host_header, len(body), body))
    try:
        await conn.response(timeout)
    except BaseException:
        conn.abort()
        raise
    return conn


async def read_all(conn: Connection, timeout: float = 5.0) -> bytes:
    out = b""
    while data := await conn.read(timeout):
        out += data
    return out


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


# --- pooling --------------------------------------------------------------------------------


def test_sequential_requests_reuse_one_keep_alive_connection() -> None:
    async def scenario() -> None:
        requests: list[bytes] = []
        async with Server(serve_forever(ok(), requests)) as server:
            pool = Pool()
            for _ in range(5):
                conn = await post(pool, server.url(), b'{"n": 1}')
                assert conn.status == 200 and await read_all(conn) == OK_BODY
                conn.release()
            assert server.connections == 1
            assert pool.open_connections() == 1
            head = requests[0].split(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"post /predict http/1.1")
            assert b"host: 127.0.0.1:%d" % server.port in head and b"content-length: 8" in head
            assert requests[0].endswith(b'{"n": 1}')
            await pool.aclose()
            assert pool.open_connections() == 0

    run(scenario())


def test_connection_close_answer_is_not_reused() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok(extra=b"connection: close\r\n"))) as server:
            pool = Pool()
            for _ in range(2):
                conn = await post(pool, server.url())
                assert await read_all(conn) == OK_BODY
                conn.release()
            assert server.connections == 2
            await pool.aclose()

    run(scenario())


def test_unread_body_drops_the_connection_and_the_server_sees_it_close() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok())) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            conn.abort()  # e.g. the client went away
            assert pool.open_connections() == 0
            for _ in range(50):
                if server.closed:
                    break
                await asyncio.sleep(0.02)
            assert server.closed == 1
            conn = await post(pool, server.url())  # a fresh connection works
            assert await read_all(conn) == OK_BODY
            conn.release()
            assert server.connections == 2
            await pool.aclose()

    run(scenario())


def test_idle_connection_closed_by_the_server_leaves_the_pool() -> None:
    async def scenario() -> None:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(ok())
            await writer.drain()
            # then close: a keep-alive timeout on the server's side

        async with Server(once) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            assert await read_all(conn) == OK_BODY
            conn.release()
            for _ in range(100):
                if pool.open_connections() == 0:
                    break
                await asyncio.sleep(0.02)
            assert pool.open_connections() == 0
            conn = await post(pool, server.url())  # not the dead one
            assert await read_all(conn) == OK_BODY
            conn.release()
            assert server.connections == 2
            await pool.aclose()

    run(scenario())


def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok())) as server:
            pool = Pool(keepalive=0.1)
            conn = await post(pool, server.url())
            await read_all(conn)
            conn.release()
            assert pool.open_connections() == 1
            for _ in range(100):
                if server.closed:
                    break
                await asyncio.sleep(0.02)
            assert server.closed == 1 and pool.open_connections() == 0
            await pool.aclose()

    run(scenario())


def test_a_connection_idle_past_the_keepalive_time_is_not_reused_even_before_the_sweep() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok())) as server:
            pool = Pool(keepalive=60.0)  # the sweep will not run during the test
            conn = await post(pool, server.url())
            await read_all(conn)
            conn.release()
            conn.idle_since -= 61.0  # as if it had sat idle past keepalive
            again = await post(pool, server.url())
            await read_all(again)
            again.release()
            assert again is not conn and conn.closed
            assert server.connections == 2 and pool.open_connections() == 1
            await pool.aclose()

    run(scenario())


def test_the_connection_limit_makes_requests_wait_for_a_free_connection() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                await release.wait()
                writer.write(ok())
                await writer.drain()

        async with Server(held) as server:
            pool = Pool(limit=1)

            async def one() -> bytes:
                conn = await post(pool, server.url())
                body = await read_all(conn)
                conn.release()
                return body

            tasks = [asyncio.ensure_future(one()) for _ in range(3)]
            await asyncio.sleep(0.1)
            assert pool.open_connections() == 1
            release.set()
            assert await asyncio.gather(*tasks) == [OK_BODY] * 3
            assert server.connections == 1
            await pool.aclose()

    run(scenario())


# --- bodies ------------------------------------------------------------------------------------


def test_chunked_body_arrives_chunk_by_chunk_before_the_server_finishes() -> None:
    async def scenario() -> None:
        go_on = asyncio.Event()

        async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await go_on.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()
            await read_request(reader)  # the connection is reusable: a second request comes
            writer.write(ok())
            await writer.drain()

        async with Server(chunked) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            assert await conn.read(5) == b"first"  # while the server still holds the rest
            go_on.set()
            assert await read_all(conn) == b"second"
            assert conn.complete
            conn.release()
            conn = await post(pool, server.url())
            assert await read_all(conn) == OK_BODY
            conn.release()
            assert server.connections == 1
            await pool.aclose()

    run(scenario())


def test_body_delimited_by_the_end_of_the_connection() -> None:
    async def scenario() -> None:
        async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
            await writer.drain()
            writer.write(b"this")

        async with Server(until_eof) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            assert await read_all(conn) == b"all of this"
            conn.release()
            assert pool.open_connections() == 0  # never reused: it ended with the body
            await pool.aclose()

    run(scenario())


def test_interim_100_continue_is_skipped() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(b"HTTP/1.1 100 Continue\r\n\r\n" + ok())) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            assert conn.status == 200 and await read_all(conn) == OK_BODY
            conn.release()
            await pool.aclose()

    run(scenario())


def test_gzip_answer_is_decoded_even_though_identity_was_asked_for() -> None:
    async def scenario() -> None:
        packed = gzip.compress(b'{"zipped": true}' * 100)
        requests: list[bytes] = []
        async with Server(serve_forever(ok(packed, b"content-encoding: gzip\r\n"), requests)) as server:
            pool = Pool()
            forwarder = Forwarder(InferenceSettings(), InferenceMetrics(CollectorRegistry()))
            forwarder._pool = pool
            upstream = await forwarder.open("m", server.url(), b"{}", Timeouts(5, 5, 5))
            assert await forwarder.read(upstream) == b'{"zipped": true}' * 100
            assert b"accept-encoding: identity" in requests[0].lower()
            await pool.aclose()

    run(scenario())


def test_unknown_content_encoding_is_a_protocol_error() -> None:
    async def scenario() -> None:
        async with Server(serve_forever(ok(b"xx", b"content-encoding: br\r\n"))) as server:
            pool = Pool()
            with pytest.raises(ProtocolError, match="content-encoding 'br'"):
                await post(pool, server.url())
            await pool.aclose()

    run(scenario())


def test_a_reader_that_falls_behind_pauses_the_socket() -> None:
    """The client never holds much more than HIGH_WATER unread bytes of a big answer."""
    async def scenario() -> None:
        size = 16 * 1024 * 1024

        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            chunk = b"x" * 65536
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()

        async with Server(flood) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            await asyncio.sleep(0.5)  # the server writes as fast as it can; we read nothing
            assert conn._buffered <= HIGH_WATER + 256 * 1024
            assert not conn.complete
            total = 0
            while data := await conn.read(5):
                total += len(data)
            assert total == size
            conn.release()
            await pool.aclose()

    run(scenario())


# --- failures ------------------------------------------------------------------------------------


def test_garbage_status_line_is_a_protocol_error() -> None:
    async def scenario() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"this is not HTTP at all\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(5)

        async with Server(garbage) as server:
            pool = Pool()
            with pytest.raises(ProtocolError, match="malformed HTTP"):
                await post(pool, server.url())
            assert pool.open_connections() == 0
            await pool.aclose()

    run(scenario())


def test_reset_before_the_answer_and_mid_body_are_protocol_errors() -> None:
    async def scenario() -> None:
        async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.transport.abort()

        async with Server(reset) as server:
            pool = Pool()
            with pytest.raises(ProtocolError):
                await post(pool, server.url())
            assert pool.open_connections() == 0

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()

        async with Server(cut) as server:
            conn = await post(pool, server.url())
            assert conn.status == 200
            with pytest.raises(ProtocolError):
                body = b""
                while data := await conn.read(5):
                    body += data
            assert body == b"only part"  # what arrived before the reset was delivered first
            conn.release()
            assert pool.open_connections() == 0
            await pool.aclose()

    run(scenario())


def test_read_timeout_before_the_headers_and_between_chunks() -> None:
    async def scenario() -> None:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(30)

        async with Server(hang) as server:
            pool = Pool()
            with pytest.raises(ReadTimeout):
                await post(pool, server.url(), timeout=0.2)

        async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
            await writer.drain()
            await asyncio.sleep(30)

        async with Server(stall) as server:
            conn = await post(pool, server.url(), timeout=5)
            assert await conn.read(0.2) == b"one"
            with pytest.raises(ReadTimeout):
                await conn.read(0.2)
            conn.release()
            assert pool.open_connections() == 0
            await pool.aclose()

    run(scenario())


def test_a_reused_connection_times_out_each_wait_at_its_own_deadline() -> None:
    """The connection keeps one read timer across requests (``Connection._wait``): a later
    deadline than the armed timer's is not cut short, an earlier one is not missed."""
    async def scenario() -> None:
        async def first_answers_then_hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(ok())
            await writer.drain()
            await read_request(reader)
            await asyncio.sleep(30)

        loop = asyncio.get_running_loop()
        async with Server(first_answers_then_hangs) as server:
            pool = Pool()
            conn = await post(pool, server.url(), timeout=0.2)  # arms the connection's timer 0.2 s ahead
            assert await conn.read(0.2) == OK_BODY and await conn.read(0.2) == b""
            conn.release()
            started = loop.time()
            with pytest.raises(ReadTimeout):
                await post(pool, server.url(), timeout=1.0)  # same connection, a later deadline
            assert loop.time() - started >= 0.95  # the timer armed for 0.2 s fired meanwhile and re-armed
            assert server.connections == 1
            await pool.aclose()

        async with Server(first_answers_then_hangs) as server:
            pool = Pool()
            conn = await post(pool, server.url(), timeout=30)  # arms the timer 30 s ahead
            assert await conn.read(30) == OK_BODY and await conn.read(30) == b""
            conn.release()
            started = loop.time()
            with pytest.raises(ReadTimeout):
                await post(pool, server.url(), timeout=0.2)  # an earlier deadline moves the timer
            assert loop.time() - started < 25
            await pool.aclose()

    run(scenario())


def test_connection_refused_is_a_connect_error() -> None:
    async def scenario() -> None:
        pool = Pool()
        with pytest.raises(ConnectError) as caught:
            await post(pool, f"http://127.0.0.1:{free_port()}/predict")
        assert not caught.value.tls
        assert pool.open_connections() == 0
        await pool.aclose()

    run(scenario())


def test_urls_it_cannot_call_are_value_errors() -> None:
    for url in ("ftp://127.0.0.1/x", "http:///nohost", "127.0.0.1:80/x"):
        with pytest.raises(ValueError):
            Target(url)
    t = Target("http://[::1]:8080/v1/x?y=1")
    assert t.key == ("http", "::1", 8080) and t.host_header == b"[::1]:8080" and t.path == b"/v1/x?y=1"
    t = Target("https://model.ns.svc.cluster.local")
    assert t.port == 443 and t.tls and t.host_header == b"model.ns.svc.cluster.local" and t.path == b"/"


# --- the Forwarder on top of it -------------------------------------------------------------------


def forwarder(**settings: Any) -> Forwarder:
    return Forwarder(InferenceSettings(**settings), InferenceMetrics(CollectorRegistry()))


def test_forwarder_maps_client_failures_to_api_errors_and_keeps_no_connection() -> None:
    async def scenario() -> None:
        fw = forwarder(retries=1, backoff=0.01)
        dead = f"http://127.0.0.1:{free_port()}/predict"
        with pytest.raises(UpstreamError) as caught:
            await fw.open("m", dead, b"{}", Timeouts(1, 1, 1))
        assert (caught.value.status, caught.value.kind, caught.value.retry_after) == (503, "connect", 5)
        assert "after 2 attempts" in caught.value.detail

        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(30)

        async with Server(hang) as server:
            with pytest.raises(UpstreamError) as caught:
                await fw.open("m", server.url(), b"{}", Timeouts(1, 0.2, 1))
            assert (caught.value.status, caught.value.kind) == (504, "read_timeout")
        with pytest.raises(UpstreamError) as caught:
            await fw.open("m", "http:///nohost", b"{}", Timeouts(1, 1, 1))
        assert (caught.value.status, caught.value.kind) == (502, "protocol")
        assert fw.open_connections() == 0
        await fw.aclose()

    run(scenario())


def test_forwarder_cancelled_while_waiting_drops_the_connection() -> None:
    async def scenario() -> None:
        eof = asyncio.Event()

        async def hang_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await reader.read()
            eof.set()

        async with Server(hang_until_eof) as server:
            fw = forwarder()
            task = asyncio.ensure_future(fw.open("m", server.url(), b"{}", Timeouts(1, 30, 1)))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(eof.wait(), 10)
            assert fw.open_connections() == 0
            await fw.aclose()

    run(scenario())


def test_forwarder_reads_under_the_size_cap_and_reuses_the_connection() -> None:
    async def scenario() -> None:
        big = b'"' + b"x" * 5000 + b'"'
        async with Server(serve_forever(ok(big))) as server:
            fw = forwarder(max_response_bytes=4096)
            with pytest.raises(UpstreamError) as caught:
                await fw.read(await fw.open("m", server.url(), b"{}", Timeouts(1, 5, 1)))
            assert caught.value.kind == "too_large" and "5002 bytes" in caught.value.detail
            fw.settings.max_response_bytes = 64 * 1024
            for _ in range(3):
                assert await fw.read(await fw.open("m", server.url(), b"{}", Timeouts(1, 5, 1))) == big
            assert server.connections == 2  # the over-cap answer's connection was dropped, then one reused
            assert fw.open_connections() == 1
            await fw.aclose()

    run(scenario())


def test_probe_is_true_only_for_2xx() -> None:
    async def scenario() -> None:
        fw = forwarder()
        async with Server(serve_forever(ok())) as good, \
                Server(serve_forever(b"HTTP/1.1 500 X\r\ncontent-length: 0\r\n\r\n")) as bad:
            assert await fw.probe(good.url("/readyz"))
            assert await fw.probe(good.url("/readyz"))
            assert good.connections == 1
            assert not await fw.probe(bad.url("/readyz"))
        assert not await fw.probe(f"http://127.0.0.1:{free_port()}/readyz", timeout=1)
        await fw.aclose()

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


def test_https_works_with_a_trusted_certificate_and_an_untrusted_one_is_a_tls_failure(
        certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def scenario() -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        async with Server(serve_forever(ok()), ssl_context=server_ctx) as server:
            trusting = ssl.create_default_context(cafile=str(cert))
            pool = Pool(ssl_context=trusting)
            for _ in range(2):
                conn = await post(pool, server.url(scheme="https"))
                assert await read_all(conn) == OK_BODY
                conn.release()
            assert server.connections == 1
            await pool.aclose()

            fw = forwarder()  # the default context: this self-signed certificate is not trusted
            with pytest.raises(UpstreamError) as caught:
                await fw.open("m", server.url(scheme="https"), b"{}", Timeouts(5, 5, 5))
            assert (caught.value.status, caught.value.kind) == (502, "protocol")
            assert "TLS failure" in caught.value.detail
            await fw.aclose()

    run(scenario())


def test_headers_are_case_insensitive_and_keep_the_first_value() -> None:
    async def scenario() -> None:
        answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\ncontent-type: application/json\r\n"
                  b"Retry-After: 7\r\nX-Name: caf\xe9\r\ncontent-length: 2\r\n\r\n{}")
        async with Server(serve_forever(answer)) as server:
            pool = Pool()
            conn = await post(pool, server.url())
            assert conn.headers.get("content-type") == "text/event-stream"
            assert conn.headers.get("RETRY-AFTER") == "7"
            assert conn.headers.get("x-name") == "caf\xe9"  # bytes read as latin-1
            assert conn.headers.get("missing") is None and conn.headers.get("missing", "d") == "d"
            assert await read_all(conn) == b"{}"
            conn.release()
            await pool.aclose()

    run(scenario())
