"""Fuzz target: arbitrary frames sent to the HTTP/2 driver after the preface.

Invariant: whatever follows the connection preface, the server sends its
SETTINGS first, then frames, and ends with a GOAWAY or a close; it never
hangs and no exception escapes the driver. ``check`` runs one input over an
in-memory stream pair with a virtual clock.

Run it under atheris (``python fuzz/fuzz_http2.py``) or call ``check`` from
Hypothesis (tests/test_server_fuzz.py).
"""

from __future__ import annotations

import sys

import trio
import trio.testing

from ccag.config import load_config
from ccag.server.http2 import H2_PREFACE, Http2Connection
from ccag.server.types import Request, Responder

# Virtual seconds one input may take: more than every server timeout.
VIRTUAL_DEADLINE = 10_000.0

# An empty SETTINGS frame, so inputs reach the frame parser past the preface check.
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

_SETTINGS_FRAME_TYPE = 0x4

_CONFIG = load_config(flags={"port": 0}, environ={}).replace(
    max_header_bytes=4096, max_body_bytes=4096
)


async def _echo(request: Request, responder: Responder) -> None:
    await responder.start_response(200, [("content-type", "application/octet-stream")])
    await responder.send_data(request.body)
    await responder.end_response()


async def _exchange(data: bytes) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    connection = Http2Connection(server, _echo, _CONFIG)
    received = bytearray()

    async def talk() -> None:
        try:
            await client.send_all(H2_PREFACE + _EMPTY_SETTINGS + data)
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
    """Send the preface, SETTINGS and ``data``; check the server's answer."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    received = trio.run(_exchange, data, clock=clock)
    # The server's first frame is its SETTINGS (RFC 9113 3.4).
    assert len(received) >= 9 and received[3] == _SETTINGS_FRAME_TYPE, received[:20]
    return received


def main() -> None:  # pragma: no cover - needs atheris
    import atheris

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
