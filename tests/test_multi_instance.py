"""Two gateways on one PostgreSQL store: key changes reach the other in time.

Each gateway refreshes its in-memory keys every ``key_refresh`` seconds, so a
key created or revoked through one must be accepted or refused by the other
within about that bound (plus a request's round trip).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from tests.admin_fixture import Caller, as_admin
from tests.e2e_client import request
from tests.gateway_fixture import RunningGateway, open_gateway
from tests.postgres_fixture import fresh_postgres_database, postgres_server  # noqa: F401

KEY_REFRESH = 0.5
# What "within the refresh bound" allows on top of one interval: the refresh
# itself (a query) and a request's round trip on a loaded CI machine.
SLACK_SECONDS = 1.0
TIMEOUT = 30


@pytest.fixture
def shared_store(postgres_server: str) -> Iterator[str]:  # noqa: F811
    yield from fresh_postgres_database(postgres_server)


async def models_status(running: RunningGateway, key: str) -> int:
    reply = await request(running.port, "GET", "/v1/models", headers=[("x-api-key", key)])
    return reply.status


async def seconds_until_status(running: RunningGateway, key: str, status: int) -> float:
    """How long until ``running`` answers ``key`` with ``status``."""
    started = trio.current_time()
    with trio.fail_after(KEY_REFRESH + SLACK_SECONDS + 5):
        while await models_status(running, key) != status:
            await trio.sleep(0.02)
    return trio.current_time() - started


async def test_key_changes_reach_the_other_gateway_within_the_refresh(
    tmp_path: Path, shared_store: str
) -> None:
    settings = {"store": shared_store, "key_refresh": KEY_REFRESH}
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                open_gateway(tmp_path / "a", settings=settings, key_name="key-a"))
            second = await stack.enter_async_context(
                open_gateway(tmp_path / "b", settings=settings, key_name="key-b"))
            admin = await as_admin(first.port)

            # Sessions live in the store: one login works on both gateways.
            on_second = Caller(second.port, admin.credential)
            assert (await on_second.ok("GET", "/admin/me"))["user"] == "admin"

            created = await admin.ok("POST", "/admin/keys", {"name": "shared", "user": "tester"}, 201)
            assert await models_status(first, created["key"]) == 200
            accepted_after = await seconds_until_status(second, created["key"], 200)
            assert accepted_after <= KEY_REFRESH + SLACK_SECONDS

            await on_second.ok("DELETE", f"/admin/keys/{created['id']}")
            assert await models_status(second, created["key"]) == 401
            refused_after = await seconds_until_status(first, created["key"], 401)
            assert refused_after <= KEY_REFRESH + SLACK_SECONDS
            # Refused for the right reason, and it stays refused.
            reply = await request(
                first.port, "GET", "/v1/models", headers=[("x-api-key", created["key"])])
            assert "revoked" in reply.json()["error"]["message"]
            await trio.sleep(KEY_REFRESH * 2)
            assert await models_status(first, created["key"]) == 401
            assert await models_status(second, created["key"]) == 401


async def test_user_deleted_on_one_gateway_loses_access_on_the_other(
    tmp_path: Path, shared_store: str
) -> None:
    settings = {"store": shared_store, "key_refresh": KEY_REFRESH}
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                open_gateway(tmp_path / "a", settings=settings, key_name="key-a"))
            second = await stack.enter_async_context(
                open_gateway(tmp_path / "b", settings=settings, key_name="key-b"))
            admin = await as_admin(first.port)
            await admin.ok("POST", "/admin/teams", {"name": "eng"}, 201)
            await admin.ok("POST", "/admin/users", {"name": "alice", "team": "eng"}, 201)
            created = await admin.ok("POST", "/admin/keys", {"name": "a1", "user": "alice"}, 201)
            await seconds_until_status(second, created["key"], 200)

            other_admin = Caller(second.port, admin.credential)
            await other_admin.ok("DELETE", "/admin/users/alice?force=true")
            refused_after = await seconds_until_status(first, created["key"], 401)
            assert refused_after <= KEY_REFRESH + SLACK_SECONDS
            teams = await admin.ok("GET", "/admin/teams")
            assert teams["teams"][0]["members"] == []
