"""HTTP/2: a stream over SETTINGS_MAX_CONCURRENT_STREAMS is refused, the connection lives on.

RFC 9113 5.1.2: the extra stream gets RST_STREAM(REFUSED_STREAM); the streams
within the limit, and new ones after them, are served on the same connection.
"""

from __future__ import annotations

import h2.errors
import trio

from ccag.server import Request, Responder
from tests.test_server_http2 import H2Client, StreamState, make_config, running

STREAM_LIMIT = 2
TIMEOUT = 10


async def echo_label(request: Request, responder: Responder) -> None:
    """200 with the request's x-label header and body, so HPACK mistakes show."""
    body = (request.headers.get("x-label") or "").encode() + b":" + request.body
    await responder.start_response(200, [("content-type", "text/plain")])
    await responder.send_data(body)
    await responder.end_response()


def post_headers(label: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":path", "/"),
        (":scheme", "http"),
        (":authority", "gateway.test"),
        ("x-label", label),
    ]


async def test_a_stream_over_the_limit_is_refused_and_the_others_complete() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(echo_label, make_config(h2_max_concurrent_streams=STREAM_LIMIT)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream, trio.open_nursery() as nursery:
                client = H2Client(stream)
                # Every HEADERS goes out before the server's SETTINGS is read,
                # so the client's h2 does not hold the extra stream back; none
                # ends its stream, so all stay open.
                client.conn.initiate_connection()
                opened = [1, 3, 5]
                for stream_id, label in zip(opened, ("first", "second", "extra"), strict=True):
                    client.streams[stream_id] = StreamState()
                    client.conn.send_headers(stream_id, post_headers(label))
                await client.flush()
                nursery.start_soon(client.read_loop)

                extra = await client.response(5)
                for stream_id in (1, 3):
                    client.conn.send_data(stream_id, b"body", end_stream=True)
                await client.flush()
                first = await client.response(1)
                second = await client.response(3)
                # The refused block was decoded too: a label it added to the
                # HPACK table is read right on a later stream.
                again = await client.request("POST", "/", headers=[("x-label", "extra")])
                later = await client.response(again)
                goaway = client.goaway
                advertised = client.conn.remote_settings.max_concurrent_streams
                nursery.cancel_scope.cancel()

    assert advertised == STREAM_LIMIT
    assert extra.reset_code == h2.errors.ErrorCodes.REFUSED_STREAM
    assert (first.headers[b":status"], bytes(first.data)) == (b"200", b"first:body")
    assert (second.headers[b":status"], bytes(second.data)) == (b"200", b"second:body")
    assert (later.headers[b":status"], bytes(later.data)) == (b"200", b"extra:")
    assert goaway is None

