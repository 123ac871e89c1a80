"""HTTP/2 at the frame level: protocol violations and graceful GOAWAY.

h2spec is not packaged on the registries this project uses, so these cases
cover the same ground by hand: each sends one violation of RFC 9113 and
asserts the GOAWAY or RST_STREAM code the RFC requires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import hpack
import pytest
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from ccag.config import Config, load_config
from ccag.server import Request, Responder, serve

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST_HEADERS = [
    (":method", "GET"),
    (":path", "/"),
    (":scheme", "http"),
    (":authority", "gateway.test"),
]


def make_config(**changes: object) -> Config:
    return load_config(flags={"port": 0}, environ={}).replace(**changes)


async def answer(request: Request, responder: Responder) -> None:
    await responder.start_response(200, [("content-type", "text/plain")])
    await responder.send_data(b"ok")
    await responder.end_response()


@asynccontextmanager
async def running(config: Config | None = None) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, answer, config or make_config())
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


class RawH2:
    """Writes hand-made frames and reads the server's frames one by one."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.encoder = hpack.Encoder()

    async def send(self, *frames: Frame | bytes) -> None:
        await self.stream.send_all(
            b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        )

    def headers(
        self, stream_id: int, headers: list[tuple[str, str]], flags: tuple[str, ...]
    ) -> HeadersFrame:
        return HeadersFrame(stream_id, data=self.encoder.encode(headers), flags=flags)

    async def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return False
            self.buffer += data
        return True

    async def next_frame(self) -> Frame | None:
        """The next frame from the server, or None once it closed."""
        if not await self._fill(9):
            return None
        frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
        if not await self._fill(9 + length):
            return None
        frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
        self.buffer = self.buffer[9 + length :]
        return frame

    async def error(self) -> tuple[str, int]:
        """Read until the server signals an error: ("goaway"|"rst", code)."""
        while True:
            frame = await self.next_frame()
            if frame is None:
                return ("closed", -1)
            if isinstance(frame, GoAwayFrame):
                return ("goaway", frame.error_code)
            if isinstance(frame, RstStreamFrame):
                return ("rst", frame.error_code)


@asynccontextmanager
async def raw_connection(
    port: int, settings: SettingsFrame | None = None
) -> AsyncIterator[RawH2]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = RawH2(stream)
        await client.send(PREFACE, settings or SettingsFrame(0))
        yield client


async def expect_after(
    port: int, *frames: Frame, settings: SettingsFrame | None = None
) -> tuple[str, int]:
    async with raw_connection(port, settings) as client:
        await client.send(*frames)
        return await client.error()


async def test_h2_frames_first_frame_not_settings_is_a_protocol_error() -> None:
    with trio.fail_after(10):
        async with running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                client = RawH2(stream)
                await client.send(PREFACE, PingFrame(0, opaque_data=b"12345678"))
                assert await client.error() == ("goaway", ErrorCodes.PROTOCOL_ERROR)


async def test_h2_frames_wrong_preface_gets_an_error_response_and_close() -> None:
    with trio.fail_after(10):
        async with running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
                received = b""
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    received += data
                assert received.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5"))


async def test_h2_frames_data_on_a_closed_stream_is_stream_closed() -> None:
    with trio.fail_after(10):
        async with running() as port, raw_connection(port) as client:
            await client.send(
                client.headers(1, REQUEST_HEADERS, ("END_HEADERS", "END_STREAM"))
            )
            while True:
                frame = await client.next_frame()
                assert frame is not None
                if frame.stream_id == 1 and "END_STREAM" in frame.flags:
                    break
            await client.send(DataFrame(1, data=b"late", flags=("END_STREAM",)))
            assert await client.error() in (
                ("rst", ErrorCodes.STREAM_CLOSED),
                ("goaway", ErrorCodes.STREAM_CLOSED),
            )


async def test_h2_frames_window_overflow_is_a_flow_control_error() -> None:
    with trio.fail_after(10):
        async with running() as port:
            result = await expect_after(
                port, WindowUpdateFrame(0, window_increment=2**31 - 1)
            )
            assert result == ("goaway", ErrorCodes.FLOW_CONTROL_ERROR)


async def test_h2_frames_invalid_header_name_is_a_protocol_error() -> None:
    with trio.fail_after(10):
        async with running() as port, raw_connection(port) as client:
            headers = REQUEST_HEADERS + [("X-Upper-Case", "no")]
            await client.send(client.headers(1, headers, ("END_HEADERS", "END_STREAM")))
            kind, code = await client.error()
            assert kind in ("rst", "goaway") and code == ErrorCodes.PROTOCOL_ERROR


async def test_h2_frames_missing_pseudo_header_is_a_protocol_error() -> None:
    with trio.fail_after(10):
        async with running() as port, raw_connection(port) as client:
            headers = [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "gateway.test"),
            ]
            await client.send(client.headers(1, headers, ("END_HEADERS", "END_STREAM")))
            kind, code = await client.error()
            assert kind in ("rst", "goaway") and code == ErrorCodes.PROTOCOL_ERROR


async def test_h2_frames_continuation_flood_ends_the_connection() -> None:
    with trio.fail_after(10):
        async with running() as port, raw_connection(port) as client:
            block = client.encoder.encode(REQUEST_HEADERS + [("x-pad", "p" * 50)])
            frames: list[Frame] = [HeadersFrame(1, data=block[:10])]
            frames += [ContinuationFrame(1, data=b"") for _ in range(2000)]
            try:
                await client.send(*frames)
            except trio.BrokenResourceError:
                pass  # the server may already have hung up: that is the point
            kind, code = await client.error()
            assert kind == "closed" or (
                kind == "goaway"
                and code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.ENHANCE_YOUR_CALM)
            )
            # Whatever the code, the server hangs up.
            assert await client.next_frame() is None


@pytest.mark.parametrize(
    "setting, value, code",
    [
        (SettingsFrame.INITIAL_WINDOW_SIZE, 2**31, ErrorCodes.FLOW_CONTROL_ERROR),
        (SettingsFrame.ENABLE_PUSH, 2, ErrorCodes.PROTOCOL_ERROR),
        (SettingsFrame.MAX_FRAME_SIZE, 100, ErrorCodes.PROTOCOL_ERROR),
        (SettingsFrame.MAX_FRAME_SIZE, 2**24, ErrorCodes.PROTOCOL_ERROR),
    ],
)
async def test_h2_frames_settings_with_a_bad_value_are_refused(
    setting: int, value: int, code: int
) -> None:
    with trio.fail_after(10):
        async with running() as port:
            result = await expect_after(
                port, settings=SettingsFrame(0, settings={setting: value})
            )
            assert result == ("goaway", code)


async def test_h2_frames_oversized_frame_is_a_frame_size_error() -> None:
    with trio.fail_after(10):
        async with running() as port, raw_connection(port) as client:
            await client.send(client.headers(1, REQUEST_HEADERS, ("END_HEADERS",)))
            await client.send(DataFrame(1, data=b"x" * 20000))
            assert await client.error() == ("goaway", ErrorCodes.FRAME_SIZE_ERROR)


async def test_h2_frames_even_stream_id_from_a_client_is_a_protocol_error() -> None:
    with trio.fail_after(10):
        async with running() as port, raw_connection(port) as client:
            await client.send(
                client.headers(2, REQUEST_HEADERS, ("END_HEADERS", "END_STREAM"))
            )
            assert await client.error() == ("goaway", ErrorCodes.PROTOCOL_ERROR)


async def test_h2_frames_streams_over_the_concurrency_limit_are_refused() -> None:
    with trio.fail_after(10):
        async with (
            running(make_config(h2_max_concurrent_streams=2)) as port,
            raw_connection(port) as client,
        ):
            for stream_id in (1, 3, 5):
                await client.send(
                    client.headers(stream_id, REQUEST_HEADERS, ("END_HEADERS",))
                )
            _, code = await client.error()
            assert code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM)


async def test_h2_frames_drain_refuses_new_streams_and_sends_goaway_after_the_last() -> (
    None
):
    # The GOAWAY waits for the open stream: h2-based clients (httpx) drop a
    # stream's remaining DATA after any GOAWAY (see Http2Connection).
    shutdown = trio.Event()
    in_handler = trio.Event()
    release = trio.Event()

    async def handler(request: Request, responder: Responder) -> None:
        await responder.start_response(200, [("content-type", "text/plain")])
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
            async with raw_connection(port) as client:
                await client.send(
                    client.headers(1, REQUEST_HEADERS, ("END_HEADERS", "END_STREAM"))
                )
                await in_handler.wait()
                shutdown.set()
                await trio.sleep(0.1)

                # A stream opened during the drain is refused, not processed.
                await client.send(
                    client.headers(3, REQUEST_HEADERS, ("END_HEADERS", "END_STREAM"))
                )
                frames: list[Frame] = []
                while True:
                    frame = await client.next_frame()
                    assert frame is not None
                    frames.append(frame)
                    if isinstance(frame, RstStreamFrame):
                        break
                assert not any(isinstance(f, GoAwayFrame) for f in frames)
                assert frame.stream_id == 3
                assert frame.error_code == ErrorCodes.REFUSED_STREAM

                release.set()
                body = b""
                after_end: list[Frame] = []
                ended = False
                while True:
                    frame = await client.next_frame()
                    if frame is None:
                        break
                    if ended:
                        after_end.append(frame)
                    if isinstance(frame, DataFrame) and frame.stream_id == 1:
                        body += frame.data
                        ended = ended or "END_STREAM" in frame.flags
                assert body == b"finished"
                # Then one GOAWAY naming stream 1 as the last processed, and a close.
                goaways = [f for f in after_end if isinstance(f, GoAwayFrame)]
                assert len(goaways) == 1
                assert goaways[0].error_code == ErrorCodes.NO_ERROR
                assert goaways[0].last_stream_id == 1
        # serve returned on its own once the stream was done.


async def test_h2_frames_drain_of_an_idle_connection_is_goaway_and_close() -> None:
    shutdown = trio.Event()

    async def serve_until_shutdown(task_status: trio.TaskStatus[int]) -> None:
        await serve(answer, make_config(), shutdown=shutdown, task_status=task_status)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_until_shutdown)
            async with raw_connection(port) as client:
                await client.send(
                    client.headers(1, REQUEST_HEADERS, ("END_HEADERS", "END_STREAM"))
                )
                frame = await client.next_frame()
                while not (frame is not None and "END_STREAM" in frame.flags):
                    frame = await client.next_frame()
                shutdown.set()
                goaway = await client.next_frame()
                while isinstance(goaway, (SettingsFrame, WindowUpdateFrame)):
                    goaway = await client.next_frame()
                assert isinstance(goaway, GoAwayFrame)
                assert (goaway.error_code, goaway.last_stream_id) == (0, 1)
                assert await client.next_frame() is None


async def test_h2_frames_a_window_that_never_opens_ends_the_stream() -> None:
    finished = trio.Event()

    async def handler(request: Request, responder: Responder) -> None:
        try:
            await responder.start_response(200, [("content-type", "text/plain")])
            await responder.send_data(b"x" * 100)
        finally:
            finished.set()

    config = make_config(write_timeout=0.3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, handler, config)
            zero_window = SettingsFrame(
                0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}
            )
            async with raw_connection(port, zero_window) as client:
                await client.send(
                    client.headers(1, REQUEST_HEADERS, ("END_HEADERS", "END_STREAM"))
                )
                assert await client.error() == ("rst", ErrorCodes.CANCEL)
                await finished.wait()
            nursery.cancel_scope.cancel()
