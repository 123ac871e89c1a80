"""The connection pool: idle bound, idle age, active cap, connect timeout."""

from __future__ import annotations

import functools
import ssl

import pytest
import trio
import trustme

from ccag.bedrock.client import BedrockClient
from ccag.bedrock.credentials import CredentialSource
from ccag.bedrock.endpoint import parse_endpoint
from ccag.bedrock.errors import UpstreamTimeout
from ccag.bedrock.pool import ConnectionPool
from tests.upstream_fakes import RecordedRequest, ServerConnection, open_fake_upstream

TIMEOUT = 10


def static_credentials() -> CredentialSource:
    return CredentialSource.static("AKIDEXAMPLE", "secret")


async def test_pool_keeps_at_most_pool_size_idle_connections() -> None:
    release = trio.Event()
    arrived = 0

    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        nonlocal arrived
        arrived += 1
        if arrived == 5:
            release.set()
        await release.wait()
        await connection.respond(200, b"ok")
        return True

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            client = BedrockClient(
                f"http://127.0.0.1:{fake.port}", "us-east-1", static_credentials(), pool_size=2
            )

            async def one() -> None:
                async with client.post("/m", b"{}") as response:
                    assert await response.read_all(100) == b"ok"

            # Five at once need five connections; the pool bound is on idle ones.
            async with trio.open_nursery() as requests:
                for _ in range(5):
                    requests.start_soon(one)
            assert client.pool.idle_count == 2
            while len(fake.eof_seen) < 3:
                await trio.sleep(0.01)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert fake.connections_accepted == 5
    assert client.pool.connections_opened == 5


async def test_pool_drops_connections_idle_longer_than_the_limit() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery)
            client = BedrockClient(
                f"http://127.0.0.1:{fake.port}", "us-east-1", static_credentials(),
                max_idle_seconds=0.1,
            )
            for pause in (0.0, 0.3):
                await trio.sleep(pause)
                async with client.post("/m", b"{}") as response:
                    await response.read_all(100)
            while not fake.eof_seen:
                await trio.sleep(0.01)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert [request.connection_id for request in fake.requests] == [1, 2]
    assert fake.eof_seen[0] == 1


async def test_pool_caps_active_connections() -> None:
    async def accept_and_hold(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, accept_and_hold, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            pool = ConnectionPool(
                parse_endpoint(f"http://127.0.0.1:{port}"),
                connect_timeout=0.2, pool_size=4, max_active=1,
            )
            first = await pool.acquire()
            with pytest.raises(UpstreamTimeout) as caught:
                await pool.acquire()
            assert caught.value.phase == "pool"

            await pool.discard(first)
            second = await pool.acquire()
            await pool.discard(second)
            nursery.cancel_scope.cancel()


async def test_pool_times_out_a_stalled_tls_handshake() -> None:
    async def never_answer(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    client_context = ssl.create_default_context()
    trustme.CA().configure_trust(client_context)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, never_answer, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            pool = ConnectionPool(
                parse_endpoint(f"https://127.0.0.1:{port}"),
                connect_timeout=0.2, pool_size=4, ssl_context=client_context,
            )
            with pytest.raises(UpstreamTimeout) as caught:
                await pool.acquire()
            nursery.cancel_scope.cancel()

    assert caught.value.phase == "connect"


async def test_client_serves_many_concurrent_requests() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery)
            client = BedrockClient(
                f"http://127.0.0.1:{fake.port}", "us-east-1", static_credentials(), pool_size=8
            )
            statuses: list[int] = []

            async def one() -> None:
                for _ in range(5):
                    async with client.post("/m", b"{}") as response:
                        await response.read_all(100)
                        statuses.append(response.status)

            async with trio.open_nursery() as requests:
                for _ in range(20):
                    requests.start_soon(one)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert statuses == [200] * 100
    # Connections are reused: 20 tasks in flight need at most 20 at once, and
    # with 8 kept idle some are closed and opened again as the tasks
    # interleave, but nowhere near one connection per request.
    assert fake.connections_accepted <= 40
    assert len(fake.requests) == 100
