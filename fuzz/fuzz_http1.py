"""Fuzz target: arbitrary bytes sent to the HTTP/1.1 driver.

Invariant: whatever the client sends, the server answers with HTTP/1.1
responses or closes the connection; it never hangs and no exception escapes
the driver. ``check`` runs one input over an in-memory stream pair with a
virtual clock, so the request and keep-alive timeouts pass instantly.

Run it under atheris (``python fuzz/fuzz_http1.py``) or call ``check`` from
Hypothesis (tests/test_server_fuzz.py).
"""

from __future__ import annotations

import sys

import trio
import trio.testing

from ccag.config import load_config
from ccag.server.http1 import Http1Connection
from ccag.server.types import Request, Responder

# Virtual seconds one input may take: more than every server timeout.
VIRTUAL_DEADLINE = 10_000.0

_CONFIG = load_config(flags={"port": 0}, environ={}).replace(
    max_header_bytes=4096, max_body_bytes=4096
)


async def _echo(request: Request, responder: Responder) -> None:
    await responder.start_response(200, [("content-type", "application/octet-stream")])
    await responder.send_data(request.body)
    await responder.end_response()


async def _exchange(data: bytes, split: int) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    connection = Http1Connection(server, _echo, _CONFIG)
    received = bytearray()

    async def talk() -> None:
        try:
            await client.send_all(data[:split])
            await trio.sleep(0.001)
            await client.send_all(data[split:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def listen() -> None:
        while True:
            try:
                chunk = await client.receive_some(65536)
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


def check(data: bytes) -> bytes:
    """Send ``data`` (in two writes, split in the middle) and check the invariant."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    received = trio.run(_exchange, data, len(data) // 2, clock=clock)
    assert not received or received.startswith(b"HTTP/1.1 "), received[:80]
    return received


def main() -> None:  # pragma: no cover - needs atheris
    import atheris

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
