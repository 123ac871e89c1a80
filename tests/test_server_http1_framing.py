"""The HTTP/1.1 responder frames body chunks itself: the bytes must be h11's."""

from __future__ import annotations

import h11
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.config import Config, load_config
from ccag.server.http1 import Http1Connection, Http1Responder


def make_config() -> Config:
    return load_config(flags={"port": 0}, environ={})


REQUESTS = {
    "get 1.1": b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
    "get 1.0": b"GET / HTTP/1.0\r\n\r\n",
    "head 1.1": b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n",
}


def h11_response(
    request: bytes, headers: list[tuple[str, str]], chunks: list[bytes]
) -> bytes:
    """What h11 alone writes for the response, event by event."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    conn.next_event()
    conn.next_event()
    raw = [(b"request-id", b"req_1")]
    raw.extend((name.encode(), value.encode()) for name, value in headers)
    out = conn.send(h11.Response(status_code=200, headers=raw, reason=b"OK")) or b""
    if not request.startswith(b"HEAD"):
        for chunk in chunks:
            if chunk:
                out += conn.send(h11.Data(data=chunk)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


async def responder_output(
    request: bytes, headers: list[tuple[str, str]], chunks: list[bytes]
) -> bytes:
    """What Http1Responder writes for the same response."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    connection = Http1Connection(server_stream, None, make_config())  # type: ignore[arg-type]
    connection._conn.receive_data(request)
    connection._conn.next_event()
    connection._conn.next_event()
    responder = Http1Responder(connection, "req_1", request.startswith(b"HEAD"))

    received = bytearray()
    async with trio.open_nursery() as nursery:

        async def read_all() -> None:
            while data := await client_stream.receive_some():
                received.extend(data)

        nursery.start_soon(read_all)
        await responder.start_response(200, headers)
        for chunk in chunks:
            await responder.send_data(chunk)
        await responder.end_response()
        await server_stream.aclose()
    return bytes(received)


@settings(max_examples=60, deadline=None)
@given(
    request_name=st.sampled_from(sorted(REQUESTS)),
    chunks=st.lists(st.binary(max_size=300), max_size=6),
    with_length=st.booleans(),
)
def test_http1_responder_writes_the_bytes_h11_would(
    request_name: str, chunks: list[bytes], with_length: bool
) -> None:
    request = REQUESTS[request_name]
    headers = [("content-type", "text/event-stream")]
    if with_length:
        headers.append(("content-length", str(sum(len(chunk) for chunk in chunks))))

    async def main() -> bytes:
        with trio.fail_after(10):
            return await responder_output(request, headers, chunks)

    assert trio.run(main) == h11_response(request, headers, chunks)
