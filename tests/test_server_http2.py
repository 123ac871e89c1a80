"""The HTTP/2 path of ccag.server.serve (h2c prior knowledge and TLS), over loopback."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import trio
import trustme

from ccag.config import Config, load_config
from ccag.errors import AbortConnection
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
            nursery.cancel_scope.cancel()


async def echo(request: Request, responder: Responder) -> None:
    body = json.dumps(
        {
            "method": request.method,
            "path": request.path,
            "host": request.headers.get("host"),
            "size": len(request.body),
            "version": request.http_version,
        }
    ).encode()
    await responder.start_response(200, [("content-type", "application/json")])
    await responder.send_data(body)
    await responder.end_response()


class StreamState:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.ended = False
        self.reset_code: int | None = None


class H2Client:
    """An h2 client connection on a real socket, reading in the background."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, StreamState] = {}
        self.changed = trio.Event()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        # Streams whose data is not acknowledged at stream level (a slow reader).
        self.stalled: set[int] = set()
        self.write_lock = trio.Lock()

    async def flush(self) -> None:
        async with self.write_lock:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()

    async def read_loop(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.closed = True
                self._notify()
                return
            for event in self.conn.receive_data(data):
                self._handle(event)
            await self.flush()
            self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].data += event.data  # type: ignore[operator]
            if event.stream_id in self.stalled:
                self.conn.increment_flow_control_window(event.flow_controlled_length)
            else:
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset_code = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.streams[stream_id] = StreamState()
        request_headers = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", "gateway.test"),
        ]
        self.conn.send_headers(
            stream_id, request_headers + (headers or []), end_stream=not body
        )
        await self.flush()
        sent = 0
        while sent < len(body):
            window = min(
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
            )
            if window <= 0:
                await self.changed.wait()
                continue
            piece = body[sent : sent + window]
            sent += len(piece)
            self.conn.send_data(stream_id, piece, end_stream=sent == len(body))
            await self.flush()
        return stream_id

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.closed:
                raise AssertionError("connection closed before the condition held")
            await self.changed.wait()

    async def response(self, stream_id: int) -> StreamState:
        state = self.streams[stream_id]
        await self.wait_for(lambda: state.ended or state.reset_code is not None)
        return state


@asynccontextmanager
async def h2_client(port: int) -> AsyncIterator[H2Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = H2Client(stream)
        await client.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_loop)
            yield client
            nursery.cancel_scope.cancel()


async def test_http2_prior_knowledge_serves_concurrent_streams() -> None:
    with trio.fail_after(10):
        async with running(echo) as port, h2_client(port) as client:
            stream_ids = [
                await client.request("POST", f"/v1/messages/{n}", b"x" * n)
                for n in (1, 2, 3, 4)
            ]
            for index, stream_id in enumerate(stream_ids):
                state = await client.response(stream_id)
                assert state.headers[b":status"] == b"200"
                assert state.headers[b"request-id"].startswith(b"req_")
                answer = json.loads(state.data)
                assert answer == {
                    "method": "POST",
                    "path": f"/v1/messages/{index + 1}",
                    "host": "gateway.test",
                    "size": index + 1,
                    "version": "2",
                }


async def test_http2_large_upload_flows_through_the_window() -> None:
    with trio.fail_after(10):
        async with running(echo) as port, h2_client(port) as client:
            stream_id = await client.request("POST", "/v1/messages", b"u" * 300_000)
            state = await client.response(stream_id)
            assert json.loads(state.data)["size"] == 300_000


async def test_http2_body_over_the_limit_gets_413_on_that_stream_only() -> None:
    with trio.fail_after(10):
        async with (
            running(echo, make_config(max_body_bytes=1000)) as port,
            h2_client(port) as client,
        ):
            big = await client.request("POST", "/v1/messages", b"b" * 5000)
            small = await client.request("POST", "/v1/messages", b"s" * 10)
            refused = await client.response(big)
            assert refused.headers[b":status"] == b"413"
            assert json.loads(refused.data)["error"]["type"] == "request_too_large"
            assert (await client.response(small)).headers[b":status"] == b"200"


async def test_http2_slow_stream_does_not_stall_a_fast_one() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(
            200, [("content-type", "application/octet-stream")]
        )
        size = 1_000_000 if request.path == "/slow" else 100_000
        await responder.send_data(b"d" * size)
        await responder.end_response()

    with trio.fail_after(10):
        async with running(handler) as port, h2_client(port) as client:
            slow = client.conn.get_next_available_stream_id()
            client.stalled.add(slow)
            assert await client.request("GET", "/slow") == slow
            await client.wait_for(lambda: len(client.streams[slow].data) >= 65535)
            fast = await client.request("GET", "/fast")
            state = await client.response(fast)
            assert len(state.data) == 100_000
            # The slow stream got exactly its window and is still waiting.
            assert len(client.streams[slow].data) == 65535
            assert not client.streams[slow].ended


async def test_http2_client_reset_cancels_the_handler() -> None:
    cancelled = trio.Event()
    started = trio.Event()

    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/event-stream")])
        await responder.send_data(b"event: ping\ndata: {}\n\n")
        if request.path == "/after":
            return
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with trio.fail_after(10):
        async with running(handler) as port, h2_client(port) as client:
            stream_id = await client.request("POST", "/v1/messages", b"{}")
            await started.wait()
            client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            await client.flush()
            with trio.fail_after(1):
                await cancelled.wait()
            # The connection still serves new streams.
            other = await client.request("GET", "/after")
            assert (await client.response(other)).headers[b":status"] == b"200"


async def test_http2_connection_close_cancels_all_handlers() -> None:
    cancelled: list[int] = []
    started = trio.Semaphore(0)

    async def handler(request: Request, responder: Responder) -> None:
        started.release()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(1)

    with trio.fail_after(10):
        async with running(handler) as port:
            async with h2_client(port) as client:
                await client.request("GET", "/a")
                await client.request("GET", "/b")
                await started.acquire()
                await started.acquire()
            with trio.fail_after(1):
                while len(cancelled) < 2:
                    await trio.sleep(0.01)


async def test_http2_handler_exception_before_start_gets_500_json() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        raise RuntimeError("boom")

    with trio.fail_after(10):
        async with running(handler) as port, h2_client(port) as client:
            state = await client.response(await client.request())
            assert state.headers[b":status"] == b"500"
            assert state.headers[b"content-type"] == b"application/json"
            assert json.loads(state.data)["error"]["type"] == "api_error"


async def test_http2_handler_exception_after_start_resets_the_stream() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/event-stream")])
        await responder.send_data(b"event: ping\ndata: {}\n\n")
        raise RuntimeError("mid-stream")

    with trio.fail_after(10):
        async with running(handler) as port, h2_client(port) as client:
            state = await client.response(await client.request())
            assert state.reset_code == h2.errors.ErrorCodes.INTERNAL_ERROR
            assert not state.ended


async def test_http2_head_response_has_no_body() -> None:
    with trio.fail_after(10):
        async with running(echo) as port, h2_client(port) as client:
            state = await client.response(await client.request("HEAD", "/"))
            assert state.headers[b":status"] == b"200"
            assert state.data == b""


async def test_tls_alpn_negotiates_h2_and_http11() -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    with (
        certificate.private_key_pem.tempfile() as key_path,
        certificate.cert_chain_pems[0].tempfile() as cert_path,
    ):
        config = make_config(tls_cert=cert_path, tls_key=key_path)
        client_context = ssl.create_default_context()
        authority.configure_trust(client_context)

        with trio.fail_after(10):
            async with running(echo, config) as port:
                # HTTP/2 by ALPN.
                client_context.set_alpn_protocols(["h2", "http/1.1"])
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                tls = trio.SSLStream(raw, client_context, server_hostname="127.0.0.1")
                await tls.do_handshake()
                assert tls.selected_alpn_protocol() == "h2"
                async with tls:
                    client = H2Client(tls)
                    await client.start()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(client.read_loop)
                        state = await client.response(
                            await client.request("GET", "/tls")
                        )
                        assert json.loads(state.data)["version"] == "2"
                        nursery.cancel_scope.cancel()

                # HTTP/1.1 by ALPN.
                http1_context = ssl.create_default_context()
                authority.configure_trust(http1_context)
                http1_context.set_alpn_protocols(["http/1.1"])
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                tls = trio.SSLStream(raw, http1_context, server_hostname="127.0.0.1")
                async with tls:
                    await tls.send_all(
                        b"GET /tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    received = b""
                    while b'"version": "1.1"' not in received:
                        data = await tls.receive_some(65536)
                        assert data
                        received += data
                    assert received.startswith(b"HTTP/1.1 200")


async def test_http2_idle_connection_gets_goaway_after_the_keepalive_timeout() -> None:
    with trio.fail_after(10):
        async with (
            running(echo, make_config(keepalive_timeout=0.2)) as port,
            h2_client(port) as client,
        ):
            state = await client.response(await client.request())
            assert state.headers[b":status"] == b"200"
            while not client.closed:
                await client.changed.wait()
            assert client.goaway is not None
            assert client.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR


async def test_http2_abort_connection_resets_only_that_stream() -> None:
    async def handler(request: Request, responder: Responder) -> None:
        if request.path == "/abort":
            raise AbortConnection("drop it")
        await echo(request, responder)

    with trio.fail_after(10):
        async with running(handler) as port, h2_client(port) as client:
            aborted = await client.response(await client.request(path="/abort"))
            served = await client.response(await client.request(body=b"still here"))

    assert aborted.reset_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert b":status" not in aborted.headers
    assert served.headers[b":status"] == b"200"
