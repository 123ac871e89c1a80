"""ConnectionReader: background reads, and the owner reading while they pause.

Real TCP sockets on loopback (the pause exists for plain TCP connections).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from ccag.errors import InternalError
from ccag.server.common import ConnectionReader

TIMEOUT = 10


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    try:
        yield client, server
    finally:
        for resource in (client, server, *listeners):
            await resource.aclose()


async def test_a_paused_reader_leaves_the_bytes_to_its_owner() -> None:
    closed: list[bool] = []
    with trio.fail_after(TIMEOUT):
        async with tcp_pair() as (client, server), trio.open_nursery() as nursery:
            reader = ConnectionReader(server, lambda: closed.append(True))
            reader.pause()
            nursery.start_soon(reader.run)
            await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
            await trio.sleep(0.1)
            background_took = reader.has_data

            # The owner's wait reads the socket itself.
            await reader.wait()
            owner_read = reader.take()

            # Resumed, the background task reads again, and sees the close.
            reader.resume()
            await client.send_all(b"more")
            await reader.wait()
            background_read = reader.take()
            await client.aclose()
            await reader.wait()
            nursery.cancel_scope.cancel()

    assert not background_took
    assert owner_read == b"GET / HTTP/1.1\r\n\r\n"
    assert background_read == b"more"
    assert reader.is_closed and closed == [True]


async def test_pausing_a_reader_parked_in_the_socket_frees_it_at_once() -> None:
    with trio.fail_after(TIMEOUT):
        async with tcp_pair() as (client, server), trio.open_nursery() as nursery:
            reader = ConnectionReader(server, lambda: None)
            nursery.start_soon(reader.run)
            await trio.sleep(0.05)  # the reader is waiting for the socket

            # No yield between pause and the owner's own wait: trio would
            # refuse a second waiter on the socket if the first were still there.
            reader.pause()
            async with trio.open_nursery() as waiting:
                waiting.start_soon(reader.wait)
                await trio.sleep(0.05)
                await client.send_all(b"x")
            nursery.cancel_scope.cancel()

    assert reader.take() == b"x"


async def test_pause_and_resume_many_times_lose_no_byte() -> None:
    received = b""
    sent = b""
    with trio.fail_after(TIMEOUT):
        async with tcp_pair() as (client, server), trio.open_nursery() as nursery:
            reader = ConnectionReader(server, lambda: None)
            nursery.start_soon(reader.run)
            for number in range(200):
                piece = b"%d;" % number
                sent += piece
                await client.send_all(piece)
                if number % 2:
                    reader.pause()
                else:
                    reader.resume()
                if number % 3 == 0:
                    await trio.lowlevel.checkpoint()
                await reader.wait()
                received += reader.take()
            while len(received) < len(sent):
                await reader.wait()
                received += reader.take()
            nursery.cancel_scope.cancel()

    assert received == sent


async def test_a_stream_that_is_not_plain_tcp_cannot_pause() -> None:
    left, _right = trio.testing.memory_stream_pair()
    reader = ConnectionReader(left, lambda: None)
    assert not reader.can_pause
    with pytest.raises(InternalError):
        reader.pause()
