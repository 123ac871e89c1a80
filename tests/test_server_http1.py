"""The HTTP/1.1 path of ccag.server.serve, over real loopback sockets."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import h11
import pytest
import trio

from ccag.config import Config, load_config
from ccag.errors import AbortConnection, ClientDisconnected
from ccag.server import Request, Responder, serve

Handler = Callable[[Request, Responder], Awaitable[None]]


def make_config(**changes: object) -> Config:
    return load_config(flags={"port": 0}, environ={}).replace(**changes)


@asynccontextmanager
async def running(handler: Handler, config: Config | None = None) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, handler, config or make_config())
        try:
            yield port
        finally:
            await close_clients()
            nursery.cancel_scope.cancel()


_open_clients: list[Client] = []


async def close_clients() -> None:
    while _open_clients:
        await _open_clients.pop().stream.aclose()


async def echo(request: Request, responder: Responder) -> None:
    body = json.dumps(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "size": len(request.body),
        }
    ).encode()
    await responder.start_response(
        200, [("content-type", "application/json"), ("content-length", str(len(body)))]
    )
    await responder.send_data(body)
    await responder.end_response()


class Client:
    """A raw socket plus an h11 client connection to read responses."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.request_sent = False
        _open_clients.append(self)

    def sent_request(self, method: str = "GET") -> None:
        """Tell the parsing side a request went out (the raw bytes bypass h11)."""
        if not self.request_sent:
            self.conn.send(
                h11.Request(method=method, target="/", headers=[("Host", "x")])
            )
            self.conn.send(h11.EndOfMessage())
            self.request_sent = True

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event  # type: ignore[return-value]

    async def response(self, method: str = "GET") -> tuple[h11.Response, bytes]:
        """The next final response and its body (informational ones skipped)."""
        self.sent_request(method)
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        assert isinstance(event, h11.Response), event
        parts = []
        while True:
            part = await self.next_event()
            if isinstance(part, h11.EndOfMessage):
                break
            assert isinstance(part, h11.Data), part
            parts.append(part.data)
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.request_sent = False
        return event, b"".join(parts)

    async def read_until_closed(self) -> bytes:
        received = b""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return received
            if not data:
                return received
            received += data


def header(response: h11.Response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return value
    return None


def error_type(body: bytes) -> str:
    envelope = json.loads(body)
    assert envelope["type"] == "error"
    return str(envelope["error"]["type"])


async def test_http1_keep_alive_serves_several_requests_on_one_connection() -> None:
    with trio.fail_after(10):
        async with running(echo) as port:
            client = await Client.open(port)
            request_ids = set()
            for index in range(3):
                await client.send(
                    f"GET /v1/models?n={index} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                response, body = await client.response()
                assert response.status_code == 200
                assert json.loads(body)["query"] == f"n={index}"
                request_id = header(response, b"request-id")
                assert request_id is not None and request_id.startswith(b"req_")
                request_ids.add(request_id)
            assert len(request_ids) == 3


async def test_http1_pipelined_requests_are_answered_in_order() -> None:
    with trio.fail_after(10):
        async with running(echo) as port:
            client = await Client.open(port)
            await client.send(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            paths = [json.loads((await client.response())[1])["path"] for _ in range(3)]
            assert paths == ["/a", "/b", "/c"]


async def test_http1_chunked_upload_is_read_whole() -> None:
    with trio.fail_after(10):
        async with running(echo) as port:
            client = await Client.open(port)
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n"
            )
            await trio.sleep(0.05)
            await client.send(b"6\r\n world\r\n0\r\n\r\n")
            response, body = await client.response()
            assert response.status_code == 200
            assert json.loads(body)["size"] == 11


async def test_http1_expect_100_continue_gets_100_before_the_body() -> None:
    with trio.fail_after(10):
        async with running(echo) as port:
            client = await Client.open(port)
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            client.sent_request("POST")
            informational = await client.next_event()
            assert isinstance(informational, h11.InformationalResponse)
            assert informational.status_code == 100
            await client.send(b"abcd")
            response, body = await client.response()
            assert response.status_code == 200
            assert json.loads(body)["size"] == 4


async def test_http1_refused_100_continue_gets_413_and_no_100() -> None:
    with trio.fail_after(10):
        async with running(echo, make_config(max_body_bytes=1000)) as port:
            client = await Client.open(port)
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            client.sent_request("POST")
            first = await client.next_event()
            assert isinstance(first, h11.Response)
            assert first.status_code == 413


async def test_http1_body_over_the_limit_gets_413_json() -> None:
    with trio.fail_after(10):
        async with running(echo, make_config(max_body_bytes=1000)) as port:
            client = await Client.open(port)
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
                + b"x" * 5000
            )
            response, body = await client.response()
            assert response.status_code == 413
            assert header(response, b"content-type") == b"application/json"
            assert error_type(body) == "request_too_large"


async def test_http1_chunked_body_over_the_limit_gets_413_json() -> None:
    with trio.fail_after(10):
        async with running(echo, make_config(max_body_bytes=1000)) as port:
            client = await Client.open(port)
            chunk = b"200\r\n" + b"x" * 0x200 + b"\r\n"
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunk * 3
            )
            response, body = await client.response()
            assert response.status_code == 413
            assert error_type(body) == "request_too_large"


async def test_http1_header_flood_gets_431_and_others_are_still_served() -> None:
    with trio.fail_after(10):
        async with running(echo, make_config(max_header_bytes=4096)) as port:
            flooder = await Client.open(port)
            await flooder.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for index in range(200):
                await flooder.send(b"X-Flood-%d: %s\r\n" % (index, b"y" * 100))
            response, body = await flooder.response()
            assert response.status_code == 431
            assert error_type(body) == "invalid_request_error"

            other = await Client.open(port)
            await other.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            response, _ = await other.response()
            assert response.status_code == 200


async def test_http1_half_a_request_gets_408_after_the_request_timeout() -> None:
    with trio.fail_after(10):
        async with running(echo, make_config(request_timeout=0.3)) as port:
            client = await Client.open(port)
            started = trio.current_time()
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
            )
            response, body = await client.response()
            assert response.status_code == 408
            assert error_type(body) == "timeout_error"
            assert await client.read_until_closed() == b""
            assert 0.25 <= trio.current_time() - started < 3


async def test_http1_idle_keep_alive_connection_is_closed_quietly() -> None:
    with trio.fail_after(10):
        async with running(echo, make_config(keepalive_timeout=0.2)) as port:
            client = await Client.open(port)
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response, _ = await client.response()
            assert response.status_code == 200
            assert await client.read_until_closed() == b""


async def test_http1_malformed_request_gets_400_json_and_close() -> None:
    with trio.fail_after(10):
        async with running(echo) as port:
            client = await Client.open(port)
            await client.send(b"THIS IS NOT HTTP\r\n\r\n")
            response, body = await client.response()
            assert response.status_code == 400
            assert header(response, b"content-type") == b"application/json"
            assert error_type(body) == "invalid_request_error"
            assert await client.read_until_closed() == b""


async def test_http1_head_response_has_no_body() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/plain")])
        await responder.send_data(b"this must not be sent")
        await responder.end_response()

    with trio.fail_after(10):
        async with running(handler) as port:
            client = await Client.open(port)
            await client.send(
                b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            response, body = await client.response("HEAD")
            assert response.status_code == 200
            assert body == b""
            response, body = await client.response()
            assert body == b"this must not be sent"


async def test_http1_client_disconnect_cancels_the_handler_within_a_second() -> None:
    cancelled_at: list[float] = []
    first_chunk_sent = trio.Event()

    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/event-stream")])
        await responder.send_data(b"event: ping\ndata: {}\n\n")
        first_chunk_sent.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at.append(trio.current_time())

    with trio.fail_after(10):
        async with running(handler) as port:
            client = await Client.open(port)
            await client.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            )
            await first_chunk_sent.wait()
            closed_at = trio.current_time()
            await close_clients()
            while not cancelled_at:
                await trio.sleep(0.01)
            assert cancelled_at[0] - closed_at < 1.0


async def test_http1_handler_exception_gets_500_json_and_a_logged_traceback(
    caplog: object,
) -> None:
    async def handler(request: Request, responder: Responder) -> None:
        raise RuntimeError("boom")

    with trio.fail_after(10):
        async with running(handler) as port:
            client = await Client.open(port)
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response, body = await client.response()
            assert response.status_code == 500
            assert header(response, b"content-type") == b"application/json"
            assert error_type(body) == "api_error"
    records = [r for r in caplog.records if r.name == "ccag.server"]  # type: ignore[attr-defined]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in records)


async def test_http1_exception_after_start_truncates_by_closing() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/event-stream")])
        await responder.send_data(b"event: ping\ndata: {}\n\n")
        raise RuntimeError("mid-stream")

    with trio.fail_after(10):
        async with running(handler) as port:
            client = await Client.open(port)
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = await client.read_until_closed()
            assert raw.startswith(b"HTTP/1.1 200")
            assert b"event: ping" in raw
            assert not raw.endswith(
                b"0\r\n\r\n"
            )  # no terminating chunk: the client sees truncation


async def test_http1_slow_reader_slows_the_handler() -> None:
    sent = 0

    async def handler(request: Request, responder: Responder) -> None:
        nonlocal sent
        await responder.start_response(
            200, [("content-type", "application/octet-stream")]
        )
        chunk = b"z" * 65536
        while True:
            await responder.send_data(chunk)
            sent += len(chunk)

    with trio.fail_after(10):
        async with running(handler) as port:
            client = await Client.open(port)
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await trio.sleep(0.5)
            # Only the socket buffers hold data: far less than unbounded.
            assert 0 < sent < 64 * 1024 * 1024
            before = sent
            await trio.sleep(0.2)
            assert sent - before <= 65536


async def test_http1_graceful_shutdown_lets_a_running_stream_finish() -> None:
    shutdown = trio.Event()
    in_handler = trio.Event()
    release = trio.Event()

    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/plain")])
        if request.path == "/slow":
            in_handler.set()
            await release.wait()
        await responder.send_data(b"finished")
        await responder.end_response()

    async def serve_until_shutdown(task_status: trio.TaskStatus[int]) -> None:
        await serve(
            handler,
            make_config(shutdown_grace=5.0),
            shutdown=shutdown,
            task_status=task_status,
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_until_shutdown)
            idle = await Client.open(port)
            await idle.send(b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await idle.response())[1] == b"finished"
            busy = await Client.open(port)
            await busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await in_handler.wait()

            shutdown.set()
            assert await idle.read_until_closed() == b""
            release.set()
            _, body = await busy.response()
            assert body == b"finished"
            assert await busy.read_until_closed() == b""
            await close_clients()
        # serve returned by itself: the nursery closed without a cancel.


async def test_http1_shutdown_does_not_wait_for_a_silent_new_connection() -> None:
    shutdown = trio.Event()

    async def serve_until_shutdown(task_status: trio.TaskStatus[int]) -> None:
        await serve(
            echo,
            make_config(shutdown_grace=30.0),
            shutdown=shutdown,
            task_status=task_status,
        )

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_until_shutdown)
            silent = await Client.open(port)
            await trio.sleep(0.05)
            shutdown.set()
            assert await silent.read_until_closed() == b""
            await close_clients()
        # serve returned well before the 30 s grace.


async def test_http1_client_that_reads_nothing_is_dropped_after_the_write_timeout() -> (
    None
):
    outcome: list[str] = []

    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(
            200, [("content-type", "application/octet-stream")]
        )
        try:
            while True:
                await responder.send_data(b"z" * 65536)
        except ClientDisconnected:
            outcome.append("disconnected")
            raise

    with trio.fail_after(10):
        async with running(handler, make_config(write_timeout=0.3)) as port:
            client = await Client.open(port)
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            while not outcome:
                await trio.sleep(0.05)
            assert outcome == ["disconnected"]


async def test_http1_abort_connection_resets_it_with_nothing_sent() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        raise AbortConnection("drop it")

    with trio.fail_after(10):
        async with running(handler) as port:
            client = await Client.open(port)
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(trio.BrokenResourceError, match="reset"):
                while await client.stream.receive_some(65536):
                    pass
