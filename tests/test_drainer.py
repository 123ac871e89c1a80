"""The end of a streamed body is read off the request's path, and the connection kept.

A fake Bedrock on loopback sends a chunked body whose last chunk comes late
(as a busy upstream's can); the request that read its answer must not wait
for it, and the connection must still go back to the pool once it arrives.
"""

from __future__ import annotations

import h11
import pytest
import trio

import ccag.bedrock.client as client_module
from ccag.bedrock.drainer import Drainer
from tests.test_bedrock_client import JSON_HEADERS, client_for
from tests.upstream_fakes import RecordedRequest, ServerConnection, open_fake_upstream

TIMEOUT = 10
ANSWER = b"the whole answer"
LATE_SECONDS = 0.4


def late_terminator():
    """A script: the body at once, its last (empty) chunk LATE_SECONDS later."""

    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.send(
            h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
        )
        await connection.send(h11.Data(data=ANSWER))
        await trio.sleep(LATE_SECONDS)
        await connection.send(h11.EndOfMessage())
        return True

    return script


async def read_answer_then_leave(client) -> float:
    """Read ANSWER, mark the reader done (as the relay does), time the exit."""
    async with client.post("/model/m/invoke-with-response-stream", b"{}", headers=JSON_HEADERS) as response:
        received = b""
        while len(received) < len(ANSWER):
            received += await response.receive_some()
        assert received == ANSWER
        response.reader_done = True
        leaving = trio.current_time()
    return trio.current_time() - leaving


async def test_with_a_drainer_the_request_leaves_at_once_and_the_connection_is_reused() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            drainer = Drainer()
            await nursery.start(drainer.run)
            fake = await open_fake_upstream(nursery, late_terminator())
            async with client_for(fake, drainer=drainer) as client:
                first_exit = await read_answer_then_leave(client)
                in_background = drainer.active
                while drainer.active:
                    await trio.sleep(0.01)
                idle_after = client.pool.idle_count
                await read_answer_then_leave(client)
                while drainer.active:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    assert first_exit < LATE_SECONDS / 4
    assert in_background == 1
    assert idle_after == 1
    # Both requests on one connection: the late end was read, not thrown away.
    assert [request.connection_id for request in fake.requests] == [1, 1]


async def test_without_a_drainer_the_request_reads_the_end_itself_and_keeps_the_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, late_terminator())
            async with client_for(fake) as client:
                waited = await read_answer_then_leave(client)
                await read_answer_then_leave(client)
            nursery.cancel_scope.cancel()

    assert waited >= LATE_SECONDS * 0.8
    assert [request.connection_id for request in fake.requests] == [1, 1]


async def test_an_end_that_never_comes_closes_the_connection(monkeypatch) -> None:
    monkeypatch.setattr(client_module, "FINISH_TIMEOUT", 0.2)

    async def never_ends(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.send(
            h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
        )
        await connection.send(h11.Data(data=ANSWER))
        await trio.sleep_forever()
        return True  # pragma: no cover

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            drainer = Drainer()
            await nursery.start(drainer.run)
            fake = await open_fake_upstream(nursery, never_ends)
            async with client_for(fake, drainer=drainer) as client:
                await read_answer_then_leave(client)
                while drainer.active:
                    await trio.sleep(0.01)
                assert client.pool.idle_count == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reader_done", [False, True])
async def test_a_body_left_mid_way_is_closed_not_drained(reader_done: bool) -> None:
    """Without reader_done the rest may be long: the connection is closed at once."""
    async def long_body(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.send(
            h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
        )
        await connection.send(h11.Data(data=ANSWER))
        await trio.sleep(LATE_SECONDS)
        await connection.send(h11.Data(data=b"more"))
        await connection.send(h11.EndOfMessage())
        return True

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, long_body)
            async with client_for(fake) as client:
                async with client.post("/m", b"{}") as response:
                    await response.receive_some()
                    response.reader_done = reader_done
                    leaving = trio.current_time()
                took = trio.current_time() - leaving
                idle = client.pool.idle_count
            nursery.cancel_scope.cancel()

    if reader_done:
        # Read to its end (the extra body is dropped) and kept.
        assert took >= LATE_SECONDS * 0.8 and idle == 1
    else:
        assert took < LATE_SECONDS / 4 and idle == 0
