"""Login throttling shared through the store: across gateways, across restarts,
per address and per account, pruned by age.

Clients appear at different addresses by binding their end of the loopback
connection to 127.0.0.N (the gateway at 127.0.0.1 sees the peer address).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import h11
import pytest
import trio

from ccag.auth import sessions as sessions_module
from ccag.auth import throttle_store
from ccag.auth.errors import AuthError
from ccag.auth.keys import KeyCache
from ccag.auth.sessions import (
    ACCOUNT_FAILURE_LIMIT,
    CLIENT_FAILURE_LIMIT,
    MAX_ACCOUNT_LOGIN_FAILURES,
    MAX_LOGIN_FAILURES,
    FailureLimit,
    LoginThrottle,
    SessionManager,
    ensure_bootstrap_admin,
    locked_until,
)
from ccag.config import load_config
from ccag.errors import ApiError
from ccag.store import Store, open_store_sync
from tests.admin_fixture import ADMIN_PASSWORD, auth_failures
from tests.e2e_client import Reply
from tests.gateway_fixture import open_gateway
from tests.postgres_fixture import BACKENDS, fresh_postgres_database, postgres_server  # noqa: F401

TIMEOUT = 30
NOW = 1_700_000_000.0
# A per-account limit short enough to wait out in a test.
SHORT_ACCOUNT_LIMIT = FailureLimit(MAX_ACCOUNT_LOGIN_FAILURES, window=3.0, lockout=5.0)


@pytest.fixture
def shared_store(postgres_server: str) -> Iterator[str]:  # noqa: F811
    yield from fresh_postgres_database(postgres_server)


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An opened store on each backend."""
    if request.param == "sqlite":
        with open_store_sync(str(tmp_path / "ccag.sqlite3")) as opened:
            yield opened
        return
    for url in fresh_postgres_database(request.getfixturevalue("postgres_server")):
        with open_store_sync(url) as opened:
            yield opened


async def post_login(
    port: int, password: str, *, client: str = "127.0.0.1", username: str = "admin"
) -> Reply:
    """``POST /auth/login`` from ``client`` (a loopback address) to 127.0.0.1."""
    body = json.dumps({"username": username, "password": password}).encode()
    connection = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=client)
    async with stream:
        await stream.send_all(
            connection.send(h11.Request(method="POST", target="/auth/login", headers=[
                ("host", f"127.0.0.1:{port}"), ("content-type", "application/json"),
                ("content-length", str(len(body))), ("connection", "close"),
            ]))
            + connection.send(h11.Data(data=body))
            + connection.send(h11.EndOfMessage())
        )
        status, headers, received = 0, {}, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {name.decode(): value.decode() for name, value in event.headers}
            elif isinstance(event, h11.Data):
                received += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, headers, received)


def error_message(reply: Reply) -> str:
    return str(reply.json()["error"]["message"])


def failure_rows(store: Store) -> int:
    return store.call(throttle_store.count_failures, readonly=True)


# -- across gateways and restarts --------------------------------------------


async def test_failures_spread_over_two_gateways_lock_the_address_out_on_both(
    tmp_path: Path, shared_store: str
) -> None:
    settings = {"store": shared_store}
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                open_gateway(tmp_path / "a", settings=settings, key_name="key-a"))
            second = await stack.enter_async_context(
                open_gateway(tmp_path / "b", settings=settings, key_name="key-b"))

            statuses = []
            for attempt in range(MAX_LOGIN_FAILURES):
                gateway = first if attempt % 2 else second
                statuses.append((await post_login(gateway.port, "guess")).status)
            assert statuses == [401] * MAX_LOGIN_FAILURES

            # Either gateway now refuses even the right password from that address.
            refusals = [await post_login(gateway.port, ADMIN_PASSWORD)
                        for gateway in (first, second)]
            # Another address is not affected.
            elsewhere = await post_login(first.port, ADMIN_PASSWORD, client="127.0.0.2")
            failures_seen = (auth_failures(first.telemetry), auth_failures(second.telemetry))

    for refused in refusals:
        assert refused.status == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert "from your address" in error_message(refused)
        assert 0 < int(refused.headers["retry-after"]) <= CLIENT_FAILURE_LIMIT.lockout
    assert elsewhere.status == 200
    # Every 401 and 429 counts in the auth failure metric of its gateway.
    total = sum(seen.get("login_failed", 0) for seen in failures_seen)
    assert total == MAX_LOGIN_FAILURES + 2


async def test_the_lockout_survives_a_gateway_restart(
    tmp_path: Path, shared_store: str
) -> None:
    settings = {"store": shared_store}
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path / "a", settings=settings, key_name="key-a") as gateway:
            for _ in range(MAX_LOGIN_FAILURES):
                assert (await post_login(gateway.port, "guess")).status == 401

        async with open_gateway(
            tmp_path / "b", settings=settings, key_name="key-b"
        ) as restarted:
            refused = await post_login(restarted.port, ADMIN_PASSWORD)
            elsewhere = await post_login(restarted.port, ADMIN_PASSWORD, client="127.0.0.2")

    assert refused.status == 429
    assert "from your address" in error_message(refused)
    assert elsewhere.status == 200


async def test_a_guess_spread_over_many_addresses_locks_the_account_briefly(
    tmp_path: Path, shared_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions_module, "ACCOUNT_FAILURE_LIMIT", SHORT_ACCOUNT_LIMIT)
    settings = {"store": shared_store}
    guessers = [f"127.0.0.{10 + number}" for number in range(MAX_ACCOUNT_LOGIN_FAILURES)]
    statuses: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                open_gateway(tmp_path / "a", settings=settings, key_name="key-a"))
            second = await stack.enter_async_context(
                open_gateway(tmp_path / "b", settings=settings, key_name="key-b"))

            async def guess(port: int, client: str) -> None:
                statuses.append((await post_login(port, "guess", client=client)).status)

            # One failure per address, all at once, over both gateways: no
            # address reaches its own limit.
            async with trio.open_nursery() as nursery:
                for number, client in enumerate(guessers):
                    nursery.start_soon(guess, (first, second)[number % 2].port, client)

            # The account is locked for everyone, the right password too.
            during = await post_login(second.port, ADMIN_PASSWORD, client="127.0.0.100")
            # Another account is not.
            other_account = await post_login(
                first.port, "guess", client="127.0.0.101", username="someone-else")
            await trio.sleep(int(during.headers.get("retry-after", "0")))
            after = await post_login(first.port, ADMIN_PASSWORD, client="127.0.0.102")

    assert statuses == [401] * MAX_ACCOUNT_LOGIN_FAILURES
    assert during.status == 429
    assert "for this account" in error_message(during)
    assert 0 < int(during.headers["retry-after"]) <= SHORT_ACCOUNT_LIMIT.retention
    assert other_account.status == 401
    assert after.status == 200


# -- the throttle over one store, with an injected clock ---------------------


async def test_old_failures_are_pruned(any_store: Store) -> None:
    throttle = LoginThrottle(any_store)
    retention = max(CLIENT_FAILURE_LIMIT.retention, ACCOUNT_FAILURE_LIMIT.retention)
    with trio.fail_after(TIMEOUT):
        for number in range(50):
            await throttle.attempt_started(f"198.51.100.{number}", f"user-{number}", NOW)
        await throttle.attempt_started("198.51.100.200", "root", NOW + retention - 1)
        assert failure_rows(any_store) == 51

        await throttle.attempt_started("203.0.113.1", "root", NOW + retention + 1)
        rows = failure_rows(any_store)

    # The 50 old rows went; the recent one and the new one stay.
    assert rows == 2


async def test_an_expired_lockout_lets_the_right_password_in(any_store: Store) -> None:
    config = load_config({"admin_password": ADMIN_PASSWORD}, environ={})
    with trio.fail_after(TIMEOUT):
        await ensure_bootstrap_admin(any_store, config, now=NOW)
        keys = KeyCache(any_store)
        await keys.refresh()
        manager = SessionManager(any_store, config, keys)
        for attempt in range(MAX_LOGIN_FAILURES):
            with pytest.raises(AuthError):
                await manager.login("admin", "guess", "192.0.2.7", NOW + attempt)
        with pytest.raises(AuthError) as caught:
            await manager.login("admin", ADMIN_PASSWORD, "192.0.2.7", NOW + 10)

        # A second gateway on the same store sees the same lockout end.
        other = SessionManager(any_store, config, keys)
        wait = int(dict(caught.value.headers)["retry-after"])
        issued = await other.login("admin", ADMIN_PASSWORD, "192.0.2.7", NOW + 10 + wait)

    assert caught.value.status == 429
    assert issued.expires_at > NOW
    # The successful attempt left no row behind; the five failures remain.
    assert failure_rows(any_store) == MAX_LOGIN_FAILURES


async def test_login_is_503_while_the_store_is_down(store: Store) -> None:
    config = load_config({"admin_password": ADMIN_PASSWORD}, environ={})
    with trio.fail_after(TIMEOUT):
        await ensure_bootstrap_admin(store, config, now=NOW)
        keys = KeyCache(store)
        await keys.refresh()
        manager = SessionManager(store, config, keys)
        store.close()
        with pytest.raises(ApiError) as caught:
            await manager.login("admin", ADMIN_PASSWORD, "192.0.2.7", NOW)

    assert caught.value.status == 503
    assert not isinstance(caught.value, AuthError)


THREE_A_MINUTE = FailureLimit(3, window=60, lockout=100)


@pytest.mark.parametrize(
    ("times", "limit", "expected"),
    [
        ([], THREE_A_MINUTE, 0.0),
        ([0.0, 1.0], THREE_A_MINUTE, 0.0),
        # Three within the window: locked until the lockout after the third.
        ([0.0, 1.0, 2.0], THREE_A_MINUTE, 102.0),
        # Three, but spread wider than the window: no lockout.
        ([0.0, 30.0, 60.0], THREE_A_MINUTE, 0.0),
        # An older three still decide while their lockout lasts.
        ([0.0, 1.0, 2.0, 70.0], THREE_A_MINUTE, 102.0),
        # A lockout shorter than the window lasts until the first leaves it.
        ([10.0, 11.0, 12.0], FailureLimit(3, window=92, lockout=5), 102.0),
    ],
)
def test_locked_until(times: list[float], limit: FailureLimit, expected: float) -> None:
    assert locked_until(times, limit) == expected
