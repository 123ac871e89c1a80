"""Graceful shutdown: SIGTERM to ``ccag serve`` under load, and HTTP/2 clients.

The gateway runs as a process of its own (tests/process_fixture.py) so the
signal goes through its real handling and the exit code is the one a
supervisor sees. What an operator relies on:

* the first SIGTERM closes the listener at once (new connections refused);
* streams in flight finish within ``shutdown_grace``, whole;
* the spend records of those streams are in the store after exit (the flush
  interval here is far longer than the test, so only the shutdown flush can
  have written them), and the exit code is 0;
* a second SIGTERM stops at once: the stream in flight is cut, its spend
  record is still written (status 499), and the exit code is still 0,
  because the stop is a requested one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import h11
import httpx2
import trio

from ccag.config import load_config
from ccag.server import Request, Responder, serve
from ccag.sse import SSEDecoder
from tests.e2e_client import Exchange, key_headers, message_body
from tests.process_fixture import running_pair

MODEL = "claude-sonnet-4-5"

# Streams of DELTAS deltas DELAY seconds apart: about two seconds each, long
# enough to be in flight when the signal lands, well inside the grace.
STREAMS = 4
DELTAS = 10
DELAY = 0.2
GRACE_SECONDS = 10.0

# How soon "at once" must be: the listener after the first signal, the whole
# process after the second (a signal is handled within one scheduler pass;
# the rest is closing the store).
LISTENER_CLOSE_SECONDS = 1.0
SECOND_SIGNAL_EXIT_SECONDS = 3.0


async def _open_stream(port: int, key: str) -> tuple[Exchange, str]:
    exchange = await Exchange.open(
        port,
        "POST",
        "/v1/messages",
        headers=key_headers(key),
        body=message_body(MODEL, stream=True),
    )
    status, headers = await exchange.head()
    assert status == 200
    return exchange, headers["request-id"]


async def _is_refused(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def _wait_exit(process: Any, timeout: float) -> int:
    code: int = await trio.to_thread.run_sync(lambda: process.wait(timeout=timeout))
    return code


async def test_sigterm_closes_the_listener_finishes_streams_flushes_spend_exits_0(
    tmp_path: Path,
) -> None:
    settings = {"shutdown_grace": str(GRACE_SECONDS), "spend_flush_interval": "3600"}
    with running_pair(tmp_path, settings) as pair:
        scenario = {"type": "text", "deltas": DELTAS, "delay": DELAY}
        pair.simulator.control("/_sim/script", [scenario] * STREAMS)
        with trio.fail_after(GRACE_SECONDS + 20):
            opened = [await _open_stream(pair.port, pair.key) for _ in range(STREAMS)]
            os.kill(pair.pid, signal.SIGTERM)
            signalled_at = trio.current_time()

            while not await _is_refused(pair.port):
                assert trio.current_time() - signalled_at < LISTENER_CLOSE_SECONDS
                await trio.sleep(0.02)

            bodies = []
            for exchange, _ in opened:
                bodies.append(await exchange.body())
                await exchange.aclose()
            code = await _wait_exit(pair.gateway, GRACE_SECONDS)
            exited_after = trio.current_time() - signalled_at
        rows = pair.spend_rows()
        log = pair.log()

    assert code == 0, log[-2000:]
    assert exited_after < GRACE_SECONDS
    for body in bodies:
        names = [event.event for event in SSEDecoder().feed(body)]
        assert names[0] == "message_start" and names[-1] == "message_stop", names
        assert names.count("content_block_delta") == DELTAS
    request_ids = {request_id for _, request_id in opened}
    stored = {row[0]: row for row in rows}
    assert request_ids <= set(stored), (request_ids, rows)
    assert all(stored[rid][1] == 200 and stored[rid][2] > 0 for rid in request_ids)


async def test_a_second_sigterm_stops_at_once_and_still_writes_spend(
    tmp_path: Path,
) -> None:
    settings = {"shutdown_grace": "60", "spend_flush_interval": "3600"}
    with running_pair(tmp_path, settings) as pair:
        # A stream that would run for 40 seconds: far past the test's patience.
        pair.simulator.control(
            "/_sim/script", [{"type": "text", "deltas": 200, "delay": DELAY}]
        )
        with trio.fail_after(30):
            exchange, request_id = await _open_stream(pair.port, pair.key)
            assert await exchange.chunk()
            os.kill(pair.pid, signal.SIGTERM)
            await trio.sleep(0.5)
            assert pair.gateway.poll() is None, (
                "the first signal must wait for the stream"
            )
            os.kill(pair.pid, signal.SIGTERM)
            signalled_at = trio.current_time()
            code = await _wait_exit(pair.gateway, SECOND_SIGNAL_EXIT_SECONDS)
            exited_after = trio.current_time() - signalled_at
            # The stream was cut: the client sees the connection end mid-body.
            rest = b""
            try:
                while (chunk := await exchange.chunk()) is not None:
                    rest += chunk
                ended_cleanly = True
            except (h11.RemoteProtocolError, trio.BrokenResourceError):
                # The connection ended before the chunked body did.
                ended_cleanly = False
            await exchange.aclose()
        rows = pair.spend_rows()

    assert code == 0
    assert exited_after < SECOND_SIGNAL_EXIT_SECONDS
    assert not ended_cleanly
    assert b"message_stop" not in rest
    assert [(row[0], row[1]) for row in rows] == [(request_id, 499)]


async def test_streams_still_running_when_the_grace_ends_get_one_error_event(
    tmp_path: Path,
) -> None:
    grace = 1.0
    settings = {"shutdown_grace": str(grace), "spend_flush_interval": "3600"}
    with running_pair(tmp_path, settings) as pair:
        # One stream stalled (waiting for Bedrock), one busy with slow deltas:
        # both outlive the grace.
        pair.simulator.control(
            "/_sim/script",
            [
                {"type": "stall", "seconds": 30, "after_events": 2},
                {"type": "text", "deltas": 200, "delay": DELAY},
            ],
        )
        with trio.fail_after(30):
            opened = [await _open_stream(pair.port, pair.key) for _ in range(2)]
            os.kill(pair.pid, signal.SIGTERM)
            signalled_at = trio.current_time()
            bodies = []
            for exchange, _ in opened:
                bodies.append(await exchange.body())
                await exchange.aclose()
            code = await _wait_exit(pair.gateway, 10)
            exited_after = trio.current_time() - signalled_at
        rows = pair.spend_rows()
        log = pair.log()

    assert code == 0, log[-2000:]
    assert exited_after < grace + 5
    for body in bodies:
        # The whole chunked body arrived (exchange.body() read to its end)
        # and ends with exactly one error event the client can retry on.
        events = SSEDecoder().feed(body)
        names = [event.event for event in events]
        assert names[0] == "message_start" and names[-1] == "error", names
        assert names.count("error") == 1 and "message_stop" not in names
        assert b'"overloaded_error"' in events[-1].data
    # Counted as the gateway's doing (529), not as clients leaving (499).
    stored = {row[0]: row[1] for row in rows}
    assert [stored[request_id] for _, request_id in opened] == [529, 529]


# HTTP/2 clients built on the h2 library, across a graceful shutdown.


async def _slow_answer(request: Request, responder: Responder) -> None:
    await responder.start_response(200, [("content-type", "text/plain")])
    for number in range(10):
        await responder.send_data(b"part %d\n" % number)
        await trio.sleep(0.05)
    await responder.end_response()


async def test_an_httpx_http2_stream_finishes_across_a_graceful_shutdown() -> None:
    # httpx (h2 underneath) fails every open stream once it sees a GOAWAY;
    # the server holds its GOAWAY until the stream is done.
    shutdown = trio.Event()
    config = load_config(flags={"port": 0}, environ={}).replace(shutdown_grace=5.0)

    async def serve_until_shutdown(task_status: trio.TaskStatus[int]) -> None:
        await serve(_slow_answer, config, shutdown=shutdown, task_status=task_status)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_until_shutdown)
            async with httpx2.AsyncClient(http1=False, http2=True) as client:
                url = f"http://127.0.0.1:{port}/"
                async with client.stream("GET", url) as response:
                    assert response.http_version == "HTTP/2"
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        shutdown.set()
                # A request after the drain finds the server gone.
                try:
                    await client.get(url)
                    refused = False
                except httpx2.TransportError:
                    refused = True

    assert body == b"".join(b"part %d\n" % number for number in range(10))
    assert refused
