"""Admin identity: bootstrap admin, logins, throttling, sessions, authorize_admin."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from ccag.auth.errors import AuthError
from ccag.auth.keys import KeyCache, create_key, generate_key
from ccag.auth.sessions import (
    LOGIN_LOCKOUT_SECONDS,
    MAX_LOGIN_FAILURES,
    SESSION_PREFIX,
    SESSION_RECHECK_SECONDS,
    FailureLimit,
    LoginThrottle,
    SessionManager,
    ensure_bootstrap_admin,
)
from ccag.config import load_config
from ccag.server.types import Headers
from ccag.store import Store, open_store_sync

NOW = 1_700_000_000.0
TTL = 3600.0
PASSWORD = "correct horse battery staple"


def _config(**values: Any) -> Any:
    flags = {"session_ttl": TTL, "admin_username": "root", "admin_password": PASSWORD}
    flags.update(values)
    return load_config(flags, environ={})


async def _manager(store: Store, **config: Any) -> SessionManager:
    keys = KeyCache(store)
    await keys.refresh()
    return SessionManager(store, _config(**config), keys)


def _bearer(token: str) -> Headers:
    return Headers((("authorization", f"Bearer {token}"),))


async def _refusal(manager: SessionManager, headers: Headers, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await manager.authorize_admin(headers, now)
    return caught.value


# -- bootstrap admin --------------------------------------------------------


async def test_bootstrap_admin_with_configured_password_can_log_in(store: Store) -> None:
    with trio.fail_after(10):
        assert await ensure_bootstrap_admin(store, _config(), now=NOW) is None
        manager = await _manager(store)
        issued = await manager.login("root", PASSWORD, "127.0.0.1", NOW)

    assert issued.token.startswith(SESSION_PREFIX)
    assert issued.expires_at == NOW + TTL


async def test_bootstrap_admin_generates_password_once_and_logs_it_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(admin_password=None)
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="ccag.auth.sessions"):
        generated = await ensure_bootstrap_admin(store, config, now=NOW)
        again = await ensure_bootstrap_admin(store, config, now=NOW)
        manager = await _manager(store, admin_password=None)
        await manager.login("root", generated or "", "127.0.0.1", NOW)

    assert generated and again is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert generated in warnings[0].getMessage()


async def test_configured_password_replaces_the_old_one(store: Store) -> None:
    with trio.fail_after(10):
        await ensure_bootstrap_admin(store, _config(admin_password="first-password"), now=NOW)
        await ensure_bootstrap_admin(store, _config(admin_password="second-password"), now=NOW)
        manager = await _manager(store)
        await manager.login("root", "second-password", "10.0.0.1", NOW)
        with pytest.raises(AuthError):
            await manager.login("root", "first-password", "10.0.0.1", NOW)


# -- login ------------------------------------------------------------------


@pytest.mark.parametrize("username,password", [("root", "wrong"), ("nobody", PASSWORD)])
async def test_login_refuses_bad_credentials(store: Store, username: str, password: str) -> None:
    with trio.fail_after(10):
        await ensure_bootstrap_admin(store, _config(), now=NOW)
        manager = await _manager(store)
        with pytest.raises(AuthError) as caught:
            await manager.login(username, password, "127.0.0.1", NOW)

    assert caught.value.status == 401
    assert caught.value.reason == "login_failed"
    assert caught.value.message == "invalid username or password"


async def test_login_throttles_after_repeated_failures(store: Store) -> None:
    with trio.fail_after(30):
        await ensure_bootstrap_admin(store, _config(), now=NOW)
        manager = await _manager(store)
        for attempt in range(MAX_LOGIN_FAILURES):
            with pytest.raises(AuthError) as caught:
                await manager.login("root", "guess", "192.0.2.7", NOW + attempt)
            assert caught.value.status == 401

        # Locked out: even the right password is refused, from that address only.
        with pytest.raises(AuthError) as caught:
            await manager.login("root", PASSWORD, "192.0.2.7", NOW + 10)
        await manager.login("root", PASSWORD, "192.0.2.8", NOW + 10)
        # After the lockout the right password works again.
        later = NOW + MAX_LOGIN_FAILURES + LOGIN_LOCKOUT_SECONDS
        await manager.login("root", PASSWORD, "192.0.2.7", later)

    assert caught.value.status == 429
    assert caught.value.error_type == "rate_limit_error"
    assert caught.value.reason == "login_failed"
    retry_after = dict(caught.value.headers)["retry-after"]
    assert int(retry_after) == LOGIN_LOCKOUT_SECONDS + MAX_LOGIN_FAILURES - 1 - 10


async def test_throttle_counts_attempts_in_flight(store: Store) -> None:
    throttle = LoginThrottle(store, FailureLimit(3, window=60, lockout=100))
    for _ in range(3):
        await throttle.attempt_started("a", "root", NOW)
    with pytest.raises(AuthError):
        await throttle.attempt_started("a", "root", NOW)


async def test_throttle_forgets_failures_outside_the_window(store: Store) -> None:
    throttle = LoginThrottle(store, FailureLimit(3, window=60, lockout=100))
    await throttle.attempt_started("a", "root", NOW)
    await throttle.attempt_started("a", "root", NOW + 1)
    # A minute later the first two no longer count: two more are allowed.
    await throttle.attempt_started("a", "root", NOW + 70)
    await throttle.attempt_started("a", "root", NOW + 71)
    await throttle.attempt_started("a", "root", NOW + 72)  # the third within a minute: locks
    with pytest.raises(AuthError):
        await throttle.attempt_started("a", "root", NOW + 73)


async def test_throttle_success_uncounts_only_its_own_attempt(store: Store) -> None:
    throttle = LoginThrottle(store, FailureLimit(3, window=60, lockout=100))
    await throttle.attempt_started("a", "root", NOW)
    await throttle.attempt_started("a", "root", NOW + 1)
    handle = await throttle.attempt_started("a", "root", NOW + 2)  # third: locks until proven good
    await store.run(lambda connection: throttle.attempt_succeeded(connection, handle))
    await throttle.attempt_started("a", "root", NOW + 3)  # back to two failures: allowed, locks again
    with pytest.raises(AuthError):
        await throttle.attempt_started("a", "root", NOW + 4)


async def test_throttle_count_survives_a_flood_of_other_addresses(store: Store) -> None:
    throttle = LoginThrottle(store, FailureLimit(3, window=60, lockout=100))
    for _ in range(3):
        await throttle.attempt_started("a", "root", NOW)
    for number in range(100):
        await throttle.attempt_started(f"client-{number}", f"user-{number}", NOW + 1)
    with pytest.raises(AuthError):
        await throttle.attempt_started("a", "root", NOW + 2)


# -- authorize_admin --------------------------------------------------------


async def test_authorize_admin_accepts_an_admin_session(store: Store) -> None:
    with trio.fail_after(10):
        await ensure_bootstrap_admin(store, _config(), now=NOW)
        manager = await _manager(store)
        issued = await manager.login("root", PASSWORD, "127.0.0.1", NOW)
        principal = await manager.authorize_admin(_bearer(issued.token), NOW + 1)

    assert (principal.user, principal.role, principal.key_id) == ("root", "admin", None)


async def test_authorize_admin_accepts_an_admin_api_key(store: Store) -> None:
    with trio.fail_after(10):
        key = await create_key(store, "ops-key", user="ops", role="admin", now=NOW)
        manager = await _manager(store)
        principal = await manager.authorize_admin(_bearer(key), NOW)

    assert (principal.key_name, principal.role) == ("ops-key", "admin")


async def test_authorize_admin_missing_credentials_is_401(store: Store) -> None:
    manager = await _manager(store)
    error = await _refusal(manager, Headers(()))
    assert (error.status, error.reason) == (401, "missing_key")


async def test_authorize_admin_bad_credentials_are_401(store: Store) -> None:
    with trio.fail_after(10):
        manager = await _manager(store)
        unknown_key = await _refusal(manager, _bearer(generate_key()))
        garbage = await _refusal(manager, _bearer("hunter2"))
        unknown_session = await _refusal(manager, _bearer(SESSION_PREFIX + "x" * 43))

    assert (unknown_key.status, unknown_key.reason) == (401, "invalid_key")
    assert (garbage.status, garbage.reason) == (401, "invalid_key")
    assert (unknown_session.status, unknown_session.reason) == (401, "invalid_session")


async def test_authorize_admin_expired_session_is_401(store: Store) -> None:
    with trio.fail_after(10):
        await ensure_bootstrap_admin(store, _config(), now=NOW)
        manager = await _manager(store)
        issued = await manager.login("root", PASSWORD, "127.0.0.1", NOW)
        error = await _refusal(manager, _bearer(issued.token), now=NOW + TTL)

    assert (error.status, error.reason) == (401, "expired_session")


async def test_authorize_admin_member_key_is_403(store: Store) -> None:
    with trio.fail_after(10):
        key = await create_key(store, "dev", user="dev", now=NOW)
        manager = await _manager(store)
        error = await _refusal(manager, _bearer(key))

    assert (error.status, error.error_type, error.reason) == (403, "permission_error", "not_admin")


async def test_authorize_admin_member_session_is_403(store: Store) -> None:
    with trio.fail_after(10):
        await create_key(store, "dev", user="dev", now=NOW)  # creates member "dev"
        await ensure_bootstrap_admin(store, _config(admin_username="dev"), now=NOW)
        store.call(lambda c: c.execute("UPDATE users SET role = 'member' WHERE name = 'dev'"))
        manager = await _manager(store)
        issued = await manager.login("dev", PASSWORD, "127.0.0.1", NOW)
        error = await _refusal(manager, _bearer(issued.token))

    assert (error.status, error.reason) == (403, "not_admin")


async def test_sessions_work_across_gateways_sharing_a_store(
    store: Store, store_path: str
) -> None:
    with trio.fail_after(10):
        await ensure_bootstrap_admin(store, _config(), now=NOW)
        gateway_a = await _manager(store)
        with open_store_sync(store_path) as other_store:
            gateway_b = await _manager(other_store)
            issued = await gateway_a.login("root", PASSWORD, "127.0.0.1", NOW)

            principal = await gateway_b.authorize_admin(_bearer(issued.token), NOW + 1)
            assert principal.user == "root"

            # A logout on A reaches B once B's cached copy is due a recheck.
            await gateway_a.logout(issued.token)
            assert (await _refusal(gateway_a, _bearer(issued.token), NOW + 2)).status == 401
            await gateway_b.authorize_admin(_bearer(issued.token), NOW + 2)
            later = NOW + 1 + SESSION_RECHECK_SECONDS
            error = await _refusal(gateway_b, _bearer(issued.token), later)

    assert error.reason == "invalid_session"
