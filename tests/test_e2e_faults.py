"""Bedrock misbehaving, and clients leaving, as a client of the gateway sees it.

Each fault is scripted in the simulator; the client is a raw HTTP/1.1
connection so the test sees exactly which bytes arrive and when. A stream
that already answered 200 must end with exactly one SSE ``error`` event and
no invented ``message_stop``; an answer that never started must be a plain
JSON error.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import trio

from ccag.simulator import Garbage, Reset, Stall, StreamException, Text, Truncate
from ccag.simulator.handler import BedrockSimulator
from ccag.sse import SSEDecoder, SSEEvent
from tests.e2e_client import (
    Exchange,
    assert_error,
    event_payloads,
    flat_snapshot,
    key_headers,
    message_body,
    post_messages,
    series,
    wait_until_idle,
)
from tests.gateway_fixture import open_gateway

TIMEOUT_S = 20
MODEL = "claude-sonnet-4-5"


def requests_total(telemetry: Any, status: str, streaming: str = "true") -> int:
    key = series("ccag.requests.total", model=MODEL, streaming=streaming, status=status)
    return int(flat_snapshot(telemetry).get(key, 0))


def assert_one_error_event(body: bytes) -> dict[str, Any]:
    """The stream's events are well formed, end in one ``error`` and no stop."""
    events = SSEDecoder().feed(body)
    payloads = event_payloads(events)
    names = [event.event for event in events]
    assert names[0] == "message_start", names
    assert names.count("error") == 1, names
    assert names[-1] == "error", names
    assert "message_stop" not in names
    error = payloads[-1]["error"]
    assert isinstance(error["type"], str) and error["message"]
    return error


async def stream_reply(running: Any) -> tuple[int, dict[str, str], bytes]:
    reply = await post_messages(
        running.port, running.key, message_body(MODEL, stream=True)
    )
    return reply.status, reply.headers, reply.body


@pytest.mark.parametrize("stream", [True, False])
async def test_silence_before_the_first_byte_is_a_504(tmp_path, stream: bool) -> None:
    settings = {"first_byte_timeout": 0.3}
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, settings=settings) as running:
            running.simulator.script(Stall(5.0))
            started = trio.current_time()
            reply = await post_messages(
                running.port, running.key, message_body(MODEL, stream=stream)
            )
            waited = trio.current_time() - started
            await wait_until_idle(running.telemetry)
            counted = requests_total(
                running.telemetry, "504", "true" if stream else "false"
            )

    assert_error(reply, 504, "timeout_error")
    assert 0.3 <= waited < 2.0
    assert counted == 1


async def test_silence_mid_stream_sends_pings_at_the_interval(tmp_path) -> None:
    interval = 0.2
    stall = 1.1
    settings = {"ping_interval": interval, "upstream_idle_timeout": 30.0}
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, settings=settings) as running:
            running.simulator.script(
                Stall(stall, after_events=2, answer=Text("after the pause"))
            )
            exchange = await Exchange.open(
                running.port,
                "POST",
                "/v1/messages",
                headers=key_headers(running.key),
                body=message_body(MODEL, stream=True),
            )
            ping_times = []
            body = b""
            try:
                status, _ = await exchange.head()
                while (chunk := await exchange.chunk()) is not None:
                    if b"event: ping" in chunk:
                        ping_times.extend(
                            [trio.current_time()] * chunk.count(b"event: ping")
                        )
                    body += chunk
            finally:
                await exchange.aclose()

    assert status == 200
    events = SSEDecoder().feed(body)
    event_payloads(events)
    names = [event.event for event in events]
    assert names[-1] == "message_stop" and "error" not in names
    expected = int(stall / interval)
    assert expected - 1 <= len(ping_times) <= expected, (len(ping_times), expected)
    gaps = [later - earlier for earlier, later in itertools.pairwise(ping_times)]
    assert all(interval * 0.75 <= gap <= interval * 2 for gap in gaps), gaps


async def test_silence_beyond_the_idle_timeout_ends_the_stream_with_one_error(
    tmp_path,
) -> None:
    settings = {"ping_interval": 0.1, "upstream_idle_timeout": 0.5}
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, settings=settings) as running:
            running.simulator.script(Stall(10.0, after_events=2))
            started = trio.current_time()
            status, headers, body = await stream_reply(running)
            took = trio.current_time() - started
            await wait_until_idle(running.telemetry)
            counted = requests_total(running.telemetry, "504")

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    error = assert_one_error_event(body)
    assert error["type"] == "timeout_error"
    assert body.count(b"event: ping") >= 3
    assert took < 3.0
    assert counted == 1


@pytest.mark.parametrize(
    "fault",
    [
        StreamException(after_events=3),
        StreamException("throttlingException", "Too many tokens", after_events=2),
        Truncate(after_events=3),
        Truncate(after_events=3, mid_frame=True),
        Garbage(after_events=3, kind="bytes"),
        Garbage(after_events=3, kind="crc"),
        Reset(after_events=3),
    ],
    ids=lambda fault: (
        f"{type(fault).__name__}-{getattr(fault, 'kind', '')}"
        f"{getattr(fault, 'mid_frame', '')}{getattr(fault, 'exception_type', '')}"
    ),
)
async def test_a_stream_broken_midway_ends_with_exactly_one_error_event(
    tmp_path, fault: Any
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(fault)
            status, headers, body = await stream_reply(running)
            await wait_until_idle(running.telemetry)
            snapshot = flat_snapshot(running.telemetry)
            # The gateway still serves the next request normally.
            after = await post_messages(running.port, running.key, message_body(MODEL))

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    error = assert_one_error_event(body)
    assert b"amazon-bedrock-invocationMetrics" not in body

    # The request counts under the status its error maps to, never 200.
    counted = {
        dict(labels)["status"]: value
        for (name, labels), value in snapshot.items()
        if name == "ccag.requests.total"
    }
    assert sum(counted.values()) == 1
    ((status_label, _),) = counted.items()
    assert status_label not in ("200", "499"), counted
    assert 400 <= int(status_label) <= 599
    errors = sum(v for (name, _), v in snapshot.items() if name == "ccag.errors.total")
    assert errors == 1
    assert error["type"] != "error"
    assert after.status == 200


async def test_reset_before_the_head_is_a_plain_json_error(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Reset())
            reply = await post_messages(
                running.port, running.key, message_body(MODEL, stream=True)
            )
            await wait_until_idle(running.telemetry)
            counted = requests_total(running.telemetry, str(reply.status))

    assert 500 <= reply.status <= 599
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["type"] == "error"
    assert counted == 1


class _StreamWatcher:
    """Wraps the simulator's stream writer to learn when it stopped."""

    def __init__(self, handler: BedrockSimulator) -> None:
        self.ended_at: float | None = None
        self.ended = trio.Event()
        original = handler._stream

        async def watched(*args: Any, **kwargs: Any) -> None:
            try:
                await original(*args, **kwargs)
            finally:
                self.ended_at = trio.current_time()
                self.ended.set()

        handler._stream = watched  # type: ignore[method-assign]


async def test_a_client_that_leaves_mid_stream_closes_the_bedrock_call(
    tmp_path,
) -> None:
    deltas = 200
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            watcher = _StreamWatcher(running.simulator.handler)
            running.simulator.script(
                Text(
                    " ".join(f"w{i}" for i in range(deltas)), deltas=deltas, delay=0.05
                )
            )
            exchange = await Exchange.open(
                running.port,
                "POST",
                "/v1/messages",
                headers=key_headers(running.key),
                body=message_body(MODEL, stream=True),
            )
            status, _ = await exchange.head()
            decoder = SSEDecoder()
            received: list[SSEEvent] = []
            while len([e for e in received if e.event == "content_block_delta"]) < 5:
                chunk = await exchange.chunk()
                assert chunk is not None
                received.extend(decoder.feed(chunk))
            await exchange.aclose()
            left_at = trio.current_time()

            await watcher.ended.wait()
            assert watcher.ended_at is not None
            noticed_after = watcher.ended_at - left_at
            await wait_until_idle(running.telemetry)
            snapshot = flat_snapshot(running.telemetry)

    assert status == 200
    assert noticed_after < 1.0, f"Bedrock's stream ran on for {noticed_after:.2f}s"
    start = json.loads(received[0].data)
    assert start["type"] == "message_start"
    usage = start["message"]["usage"]

    def token(kind: str) -> int:
        return int(snapshot.get(series(f"ccag.tokens.{kind}", model=MODEL), 0))

    assert token("input") == usage["input_tokens"]
    assert token("output") == usage["output_tokens"]
    assert token("cache_read") == usage["cache_read_input_tokens"]
    assert token("cache_write") == usage["cache_creation_input_tokens"]
    assert snapshot[series("ccag.requests.in_flight")] == 0
    requests = {
        labels: value
        for (name, labels), value in snapshot.items()
        if name == "ccag.requests.total"
    }
    assert requests == {(("model", MODEL), ("status", "499"), ("streaming", "true")): 1}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_half_closes_after_its_request_is_counted_499(
    tmp_path, stream: bool
) -> None:
    """TCP cannot tell a half-close from a client going away; either way the
    request is counted once as 499, never as a status-less 'other' (the
    cancellation can reach the route through the nursery that connects to
    Bedrock, as a group of Cancelled)."""
    body = message_body(MODEL, stream=stream)
    head = (
        b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"anthropic-version: 2023-06-01\r\nx-api-key: %s\r\ncontent-length: %d\r\n\r\n"
    )
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            for _ in range(3):
                client = await trio.open_tcp_stream("127.0.0.1", running.port)
                await client.send_all(head % (running.key.encode(), len(body)) + body)
                await client.send_eof()
                while await client.receive_some(65536):
                    pass
                await client.aclose()
            await wait_until_idle(running.telemetry)
            snapshot = flat_snapshot(running.telemetry)

    statuses = {
        dict(labels)["status"]: value
        for (name, labels), value in snapshot.items()
        if name == "ccag.requests.total"
    }
    assert statuses == {"499": 3}
