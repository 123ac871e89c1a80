"""LeanSocketStream: the same bytes and errors as trio's SocketStream, and Trio's rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from ccag.server.fastio import MAX_STEPS_WITHOUT_YIELD, LeanSocketStream, lean_stream


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[LeanSocketStream, trio.SocketStream]]:
    """A lean client stream and the plain server stream it is connected to."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    lean = LeanSocketStream(client)
    try:
        yield lean, server
    finally:
        await lean.aclose()
        await server.aclose()


async def test_lean_stream_sends_and_receives_every_byte_in_order() -> None:
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB: the socket fills, sends wait
    with trio.fail_after(10):
        async with tcp_pair() as (lean, server):
            received = bytearray()

            async def read_all() -> None:
                while len(received) < len(payload):
                    received.extend(await server.receive_some(7000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                await lean.send_all(payload)

            assert bytes(received) == payload
            await server.send_all(b"answer")
            assert await lean.receive_some(100) == b"answer"


async def test_lean_stream_receives_empty_bytes_at_eof() -> None:
    with trio.fail_after(10):
        async with tcp_pair() as (lean, server):
            await server.send_eof()

            assert await lean.receive_some() == b""


async def test_lean_stream_receive_blocked_is_cancelled() -> None:
    with trio.fail_after(10):
        async with tcp_pair() as (lean, _server):
            with trio.move_on_after(0.05) as scope:
                await lean.receive_some(10)

            assert scope.cancelled_caught


async def test_lean_stream_closed_by_another_task_wakes_a_blocked_receive() -> None:
    with trio.fail_after(10):
        async with tcp_pair() as (lean, _server):
            async with trio.open_nursery() as nursery:

                async def close_soon() -> None:
                    await trio.sleep(0.05)
                    await trio.aclose_forcefully(lean.stream)

                nursery.start_soon(close_soon)
                with pytest.raises(trio.ClosedResourceError):
                    await lean.receive_some(10)

            with pytest.raises(trio.ClosedResourceError):
                await lean.send_all(b"late")


async def test_lean_stream_send_to_a_reset_peer_is_a_broken_resource() -> None:
    with trio.fail_after(10):
        async with tcp_pair() as (lean, server):
            server.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            await server.aclose()

            with pytest.raises(trio.BrokenResourceError):
                for _ in range(100):
                    await lean.send_all(b"x" * 1024)
                    await trio.sleep(0.01)


async def test_lean_stream_loop_that_never_blocks_still_lets_others_run() -> None:
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    with trio.fail_after(10):
        async with tcp_pair() as (lean, server), trio.open_nursery() as nursery:
            nursery.start_soon(other)
            # A reader that always has data: never waits for the socket.
            await server.send_all(b"y" * (MAX_STEPS_WITHOUT_YIELD + 1))
            await trio.sleep(0.05)
            for _ in range(MAX_STEPS_WITHOUT_YIELD + 1):
                assert await lean.receive_some(1) == b"y"
                if ran:
                    break

            assert ran == [1]


async def test_lean_stream_sees_a_pending_cancellation_before_the_call() -> None:
    with trio.fail_after(10):
        async with tcp_pair() as (lean, server):
            await server.send_all(b"ready")
            await trio.sleep(0.05)
            with trio.CancelScope() as scope:
                scope.cancel()
                await lean.receive_some(10)
                pytest.fail("a cancelled receive returned")  # pragma: no cover

            assert scope.cancelled_caught
            assert await lean.receive_some(10) == b"ready"


async def test_lean_stream_wraps_plain_tcp_streams_only() -> None:
    left, _right = trio.testing.memory_stream_pair()

    assert lean_stream(left) is left
    with trio.fail_after(10):
        async with tcp_pair() as (_lean, server):
            assert isinstance(lean_stream(server), LeanSocketStream)
