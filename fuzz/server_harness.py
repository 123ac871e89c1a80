"""One server connection driven over an in-memory stream on a virtual clock.

The HTTP/1.1 and HTTP/2 fuzz targets share this: each builds its driver on
the server half of a ``memory_stream_pair``, sends the input in one or more
writes and collects every byte the server sends until it closes. The mock
clock jumps whenever all tasks wait, so request and keep-alive timeouts pass
instantly and a hung driver shows as :data:`VIRTUAL_DEADLINE` being reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio
import trio.testing

from ccag.config import Config, load_config
from ccag.server.types import Handler, Request, Responder

# Virtual seconds one input may take: more than every server timeout.
VIRTUAL_DEADLINE = 10_000.0

# Small limits, so that fuzz inputs reach the size checks.
CONFIG = load_config(flags={"port": 0}, environ={}).replace(
    max_header_bytes=4096, max_body_bytes=4096
)

# Bytes read from the server per receive.
_RECEIVE_BYTES = 65536

# Virtual pause between writes, so the driver sees each write on its own.
_PAUSE_BETWEEN_WRITES = 0.001


class ServerConnection(Protocol):
    async def run(self) -> None: ...


class ConnectionFactory(Protocol):
    def __call__(
        self, stream: trio.abc.Stream, handler: Handler, config: Config
    ) -> ServerConnection: ...


async def echo(request: Request, responder: Responder) -> None:
    """Answer 200 with the request body, so inputs reach the response path."""
    await responder.start_response(200, [("content-type", "application/octet-stream")])
    await responder.send_data(request.body)
    await responder.end_response()


async def _exchange(open_connection: ConnectionFactory, writes: Sequence[bytes]) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    connection = open_connection(server, echo, CONFIG)
    received = bytearray()

    async def talk() -> None:
        try:
            for index, data in enumerate(writes):
                if index:
                    await trio.sleep(_PAUSE_BETWEEN_WRITES)
                await client.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def listen() -> None:
        while True:
            try:
                chunk = await client.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not chunk:
                return
            received.extend(chunk)

    with trio.fail_after(VIRTUAL_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            nursery.start_soon(talk)
            await listen()
    await client.aclose()
    return bytes(received)


def exchange(open_connection: ConnectionFactory, writes: Sequence[bytes]) -> bytes:
    """Everything the server sent in answer to ``writes``, until it closed.

    Raises:
        trio.TooSlowError: the connection was still open after
            :data:`VIRTUAL_DEADLINE` virtual seconds (a hang).
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(_exchange, open_connection, writes, clock=clock)
