"""A client that stops reading one HTTP/2 stream, through the whole gateway.

tests/test_server_http2.py shows the bare server keeps a fast stream going
beside a stalled one. Here the stalled stream is a real ``/v1/messages``
relay from the simulator: the gateway must stop reading that Bedrock
response (the stream's window is shut, so ``send_data`` waits), hold no
more than the window's worth for it, and keep serving the other streams on
the same connection and other connections at their usual speed. When the
client reads again, the stalled stream resumes and arrives whole.
"""

from __future__ import annotations

import json

import trio

from ccag.simulator import Text
from ccag.sse import SSEDecoder
from tests.e2e_client import key_headers, message_body, post_messages
from tests.gateway_fixture import open_gateway
from tests.test_server_http2 import h2_client

MODEL = "claude-sonnet-4-5"

# The stalled answer: far more than a stream window (65,535 bytes by default)
# so the relay must block on it.
SLOW_DELTAS = 400
SLOW_TEXT = " ".join(f"word{index:05d}" for index in range(40_000))

FAST_REQUESTS = 6

# A normal request through the gateway on loopback takes milliseconds; a
# second allows for a loaded CI machine, while a stream stuck behind the
# stalled one would wait forever.
FAST_LATENCY_SECONDS = 1.0

DEFAULT_STREAM_WINDOW = 65_535


def text_of(body: bytes) -> str:
    events = SSEDecoder().feed(body)
    assert events[-1].event == "message_stop", [e.event for e in events][-3:]
    text = ""
    for event in events:
        if event.event == "content_block_delta":
            text += json.loads(event.data)["delta"].get("text", "")
    return text


async def test_a_stalled_http2_stream_does_not_slow_the_others(tmp_path) -> None:
    with trio.fail_after(30):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Text(SLOW_TEXT, deltas=SLOW_DELTAS))
            async with h2_client(running.port) as client:
                slow = client.conn.get_next_available_stream_id()
                client.stalled.add(slow)
                await client.request(
                    "POST",
                    "/v1/messages",
                    message_body(MODEL, stream=True),
                    key_headers(running.key),
                )
                await client.wait_for(
                    lambda: len(client.streams[slow].data) >= DEFAULT_STREAM_WINDOW
                )

                # Same connection: new streams are answered promptly.
                latencies = []
                for _ in range(FAST_REQUESTS):
                    started = trio.current_time()
                    stream_id = await client.request(
                        "POST",
                        "/v1/messages",
                        message_body(MODEL, stream=True),
                        key_headers(running.key),
                    )
                    state = await client.response(stream_id)
                    latencies.append(trio.current_time() - started)
                    assert state.headers[b":status"] == b"200"
                    assert text_of(bytes(state.data))

                # Another connection, HTTP/1.1: the same.
                started = trio.current_time()
                other = await post_messages(
                    running.port, running.key, message_body(MODEL, stream=True)
                )
                other_latency = trio.current_time() - started

                # The stalled stream got its window's worth and no more.
                stalled_bytes = len(client.streams[slow].data)
                assert not client.streams[slow].ended

                # Reading again: the rest arrives, whole and in order.
                client.stalled.discard(slow)
                client.conn.increment_flow_control_window(stalled_bytes, stream_id=slow)
                await client.flush()
                slow_state = await client.response(slow)

    assert max(latencies) < FAST_LATENCY_SECONDS, latencies
    assert other.status == 200 and other_latency < FAST_LATENCY_SECONDS
    assert stalled_bytes == DEFAULT_STREAM_WINDOW
    assert text_of(bytes(slow_state.data)) == SLOW_TEXT
