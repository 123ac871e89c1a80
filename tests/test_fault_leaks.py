"""Bedrock faults leave nothing behind: one clean error each, no leaked task or socket.

tests/test_e2e_faults.py checks what a client sees for each fault. This file
runs the same kinds of faults against ``ccag serve`` as a process of its own
and then checks the other side: once every exchange is over, the gateway's
tasks and file descriptors, and the simulator's (its connections from the
gateway's pool), are back where they were before the faults. A connection a
fault spoiled must be closed, never pooled, and never held open by a task
that waits for it forever.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from ccag.sse import SSEDecoder
from tests.e2e_client import Exchange, key_headers, message_body
from tests.process_fixture import open_fd_count, running_pair

MODEL = "claude-sonnet-4-5"
TIMEOUT_S = 60

# Each fault is sent this many times in a row: a leak per fault shows as a
# multiple of it.
REPEATS = 3

# Scripted faults (the simulator's control API form) and what the client
# must get: "json" a plain JSON 5xx error, "sse" a 200 stream that ends in
# exactly one error event.
FAULTS: list[tuple[dict[str, Any], str]] = [
    ({"type": "reset"}, "json"),
    ({"type": "reset", "after_events": 3}, "sse"),
    ({"type": "garbage", "after_events": 3, "kind": "bytes"}, "sse"),
    ({"type": "garbage", "after_events": 3, "kind": "crc"}, "sse"),
    ({"type": "truncate", "after_events": 3, "mid_frame": True}, "sse"),
    ({"type": "stream_exception", "after_events": 2}, "sse"),
    ({"type": "stall", "seconds": 1.5, "after_events": 2}, "sse"),
]

# More model calls than one request makes with all its retries.
CALLS_PER_REQUEST = 10

# The stall above outlasts this, so the gateway gives up on the upstream.
SETTINGS = {"upstream_idle_timeout": "0.5", "ping_interval": "0.2"}

# Normal requests before the baseline, so that the upstream pool holds its
# idle connection already.
WARMUP_REQUESTS = 3

# How long the processes may take to wind down after the last exchange: the
# simulator's stalled handler wakes after its stall and finds its peer gone.
SETTLE_SECONDS = 10.0


async def _exchange(port: int, key: str) -> tuple[int, str, bytes]:
    exchange = await Exchange.open(
        port,
        "POST",
        "/v1/messages",
        headers=key_headers(key),
        body=message_body(MODEL, stream=True),
    )
    try:
        status, headers = await exchange.head()
        body = await exchange.body()
    finally:
        await exchange.aclose()
    return status, headers.get("content-type", ""), body


def _assert_one_clean_error(
    expected: str, status: int, content_type: str, body: bytes
) -> None:
    if expected == "json":
        assert 500 <= status <= 599, (status, body)
        assert content_type.startswith("application/json"), content_type
        return
    assert status == 200, (status, body)
    names = [event.event for event in SSEDecoder().feed(body)]
    assert names[0] == "message_start", names
    assert names.count("error") == 1 and names[-1] == "error", names
    assert "message_stop" not in names


def _reading(pair: Any) -> dict[str, int]:
    runtime = pair.runtime()
    return {
        "tasks": runtime["tasks"],
        "in_flight": runtime["requests_in_flight"],
        "gateway_fds": open_fd_count(pair.pid),
        "simulator_fds": open_fd_count(pair.simulator.process.pid),
    }


async def _settled(pair: Any, baseline: dict[str, int] | None = None) -> dict[str, int]:
    """A reading once nothing is in flight and two readings agree (or match
    ``baseline``), or the last one when SETTLE_SECONDS run out."""
    deadline = trio.current_time() + SETTLE_SECONDS
    previous = None
    while True:
        reading = await trio.to_thread.run_sync(_reading, pair)
        if reading["in_flight"] == 0:
            if baseline is not None and all(
                reading[name] <= baseline[name] for name in baseline
            ):
                return reading
            if baseline is None and reading == previous:
                return reading
        if trio.current_time() > deadline:
            return reading
        previous = reading
        await trio.sleep(0.3)


@pytest.mark.slow
async def test_bedrock_faults_leak_no_task_and_no_socket(tmp_path: Path) -> None:
    with running_pair(tmp_path, SETTINGS) as pair:
        with trio.fail_after(TIMEOUT_S):
            for _ in range(WARMUP_REQUESTS):
                status, _, _ = await _exchange(pair.port, pair.key)
                assert status == 200
            baseline = await _settled(pair)

            started = time.monotonic()
            for scenario, expected in FAULTS:
                for _ in range(REPEATS):
                    # The gateway may retry a call that failed before any
                    # answer (a fresh connection, another endpoint): every
                    # retry meets the same fault. The queue is then cleared.
                    pair.simulator.control("/_sim/reset", {})
                    pair.simulator.control(
                        "/_sim/script", [scenario] * CALLS_PER_REQUEST
                    )
                    status, content_type, body = await _exchange(pair.port, pair.key)
                    _assert_one_clean_error(expected, status, content_type, body)

            # A client that leaves mid-stream, too.
            pair.simulator.control("/_sim/reset", {})
            pair.simulator.control(
                "/_sim/script",
                [{"type": "text", "deltas": 50, "delay": 0.05}] * REPEATS,
            )
            for _ in range(REPEATS):
                exchange = await Exchange.open(
                    pair.port,
                    "POST",
                    "/v1/messages",
                    headers=key_headers(pair.key),
                    body=message_body(MODEL, stream=True),
                )
                assert (await exchange.head())[0] == 200
                assert await exchange.chunk()
                await exchange.aclose()
            faults_took = time.monotonic() - started

            after = await _settled(pair, baseline)
            # Still serving normally.
            status, _, body = await _exchange(pair.port, pair.key)

    assert status == 200 and b"message_stop" in body
    assert after["in_flight"] == 0
    for name in ("tasks", "gateway_fds", "simulator_fds"):
        assert after[name] <= baseline[name], (name, baseline, after, faults_took)
