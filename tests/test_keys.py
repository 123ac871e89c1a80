"""API keys: format, hashing, masking, and the in-memory cache's verdicts."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

from ccag.auth.errors import AuthError
from ccag.auth.keys import (
    KEY_PREFIX,
    KeyCache,
    create_key,
    generate_key,
    hash_key,
    issue_key,
    key_prefix,
    mask_key,
)
from ccag.server.types import Headers
from ccag.store import Store, StoreError, open_store_sync
from ccag.store.identity import find_keys, revoke_key

T = TypeVar("T")
NOW = 1_700_000_000.0


def _issue(store: Store, name: str, **options: Any) -> str:
    options.setdefault("user", name)
    return store.call(lambda c: issue_key(c, name, now=NOW, **options)).key


def _headers(**values: str) -> Headers:
    return Headers(tuple((name.replace("_", "-"), value) for name, value in values.items()))


def _refusal(cache: KeyCache, headers: Headers, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as caught:
        cache.authenticate(headers, now)
    assert caught.value.status == 401
    assert caught.value.error_type == "authentication_error"
    return caught.value


async def _loaded(store: Store) -> KeyCache:
    cache = KeyCache(store)
    with trio.fail_after(10):
        await cache.refresh()
    return cache


# -- format -----------------------------------------------------------------


def test_generate_key_is_prefix_and_43_url_safe_chars() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert re.fullmatch(r"sk-ccag-[A-Za-z0-9_-]{43}", key)


def test_hash_key_is_sha256_hex() -> None:
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()


def test_mask_key_shows_ends_only() -> None:
    key = "sk-ccag-abcd" + "X" * 35 + "wxyz"
    assert mask_key(key) == "sk-ccag-abcd…wxyz"
    assert key_prefix(key) == "sk-ccag-abcd"
    assert "X" not in mask_key(key)


def test_mask_key_hides_short_values_completely() -> None:
    assert mask_key("sk-ccag-short") == "<13 chars>"
    assert mask_key("") == "<0 chars>"


# -- authenticate -----------------------------------------------------------


async def test_authenticate_accepts_x_api_key(store: Store) -> None:
    key = _issue(store, "alice")
    cache = await _loaded(store)

    principal = cache.authenticate(_headers(x_api_key=key), NOW)

    assert (principal.key_name, principal.user, principal.team) == ("alice", "alice", None)
    assert principal.role == "member"
    assert principal.key_id is not None and principal.key_id.startswith("key_")


async def test_authenticate_accepts_bearer(store: Store) -> None:
    key = _issue(store, "alice")
    cache = await _loaded(store)

    principal = cache.authenticate(_headers(authorization=f"Bearer {key}"), NOW)

    assert principal.key_name == "alice"


async def test_authenticate_either_valid_credential_is_enough(store: Store) -> None:
    key = _issue(store, "alice")
    cache = await _loaded(store)
    bogus = generate_key()

    first = cache.authenticate(_headers(x_api_key=key, authorization=f"Bearer {bogus}"), NOW)
    second = cache.authenticate(_headers(x_api_key=bogus, authorization=f"bearer {key}"), NOW)

    assert first.key_name == second.key_name == "alice"


async def test_authenticate_missing_key(store: Store) -> None:
    cache = await _loaded(store)

    error = _refusal(cache, _headers(authorization="Basic dXNlcjpwYXNz"))

    assert error.reason == "missing_key"
    assert "x-api-key" in error.message
    assert error.envelope()["error"] == {  # Anthropic's shape
        "type": "authentication_error",
        "message": error.message,
    }


async def test_authenticate_unknown_key(store: Store) -> None:
    _issue(store, "alice")
    cache = await _loaded(store)

    for credential in (generate_key(), "not-a-key", KEY_PREFIX):
        error = _refusal(cache, _headers(x_api_key=credential))
        assert error.reason == "invalid_key"
        assert error.message.startswith("invalid x-api-key")

        # The same key sent as a bearer token is named as one.
        error = _refusal(cache, _headers(authorization=f"Bearer {credential}"))
        assert error.reason == "invalid_key"
        assert error.message.startswith("invalid bearer token:")
        assert "x-api-key" not in error.message


async def test_authenticate_revoked_key_after_refresh(store: Store) -> None:
    key = _issue(store, "alice")
    cache = await _loaded(store)
    store.call(lambda c: revoke_key(c, find_keys(c, "alice")[0].id, NOW))

    # Until the next refresh the cache still has the key as it was.
    assert cache.authenticate(_headers(x_api_key=key), NOW).key_name == "alice"
    await cache.refresh()
    error = _refusal(cache, _headers(x_api_key=key))

    assert error.reason == "revoked_key"
    assert "revoked" in error.message


async def test_authenticate_expired_key(store: Store) -> None:
    key = _issue(store, "alice", expires_at=NOW + 60)
    cache = await _loaded(store)

    assert cache.authenticate(_headers(x_api_key=key), NOW + 59).key_name == "alice"
    error = _refusal(cache, _headers(x_api_key=key), now=NOW + 60)

    assert error.reason == "expired_key"
    assert "expired" in error.message


async def test_authenticate_reports_most_specific_failure(store: Store) -> None:
    key = _issue(store, "alice")
    store.call(lambda c: revoke_key(c, find_keys(c, "alice")[0].id, NOW))
    cache = await _loaded(store)

    error = _refusal(cache, _headers(x_api_key=generate_key(), authorization=f"Bearer {key}"))

    assert error.reason == "revoked_key"


async def test_key_role_comes_from_override_then_user(store: Store) -> None:
    member = _issue(store, "m1", user="mallory")
    admin_user = _issue(store, "a1", user="root", role="admin")
    team_admin = _issue(store, "t1", user=None, team="ops", role="admin")
    team_key = _issue(store, "t2", user=None, team="ops")
    cache = await _loaded(store)

    def role(key: str) -> str:
        return cache.authenticate(_headers(x_api_key=key), NOW).role

    assert [role(k) for k in (member, admin_user, team_admin, team_key)] == [
        "member", "admin", "admin", "member",
    ]
    assert cache.authenticate(_headers(x_api_key=team_key), NOW).team == "ops"


async def test_authenticate_never_touches_the_store(store: Store) -> None:
    key = _issue(store, "alice")
    cache = await _loaded(store)
    store.close()

    assert cache.authenticate(_headers(x_api_key=key), NOW).key_name == "alice"
    assert _refusal(cache, _headers(x_api_key=generate_key())).reason == "invalid_key"
    with pytest.raises(StoreError):
        await cache.refresh()
    assert cache.authenticate(_headers(x_api_key=key), NOW).key_name == "alice"


async def test_refresh_sees_key_created_through_another_store(
    store: Store, store_path: str
) -> None:
    cache = await _loaded(store)
    with open_store_sync(store_path) as other:
        key = await create_key(other, "bob", user="bob", now=NOW)

    assert _refusal(cache, _headers(x_api_key=key)).reason == "invalid_key"
    await cache.refresh()
    assert cache.authenticate(_headers(x_api_key=key), NOW).key_name == "bob"


# -- refresh loop -----------------------------------------------------------


class FlakyStore:
    """A store that fails while ``failing`` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failing = False
        self.calls = 0

    async def run(self, work: Callable[..., T], *, readonly: bool = False) -> T:
        self.calls += 1
        if self.failing:
            raise StoreError("database is gone")
        return await self.store.run(work, readonly=readonly)


async def test_refresh_loop_keeps_keys_and_logs_once_per_outage(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    key = _issue(store, "alice")
    flaky = FlakyStore(store)
    cache = KeyCache(flaky)  # type: ignore[arg-type]
    await cache.refresh()

    async def wait_for_calls(count: int) -> None:
        while flaky.calls < count:
            await trio.sleep(0.01)

    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="ccag.auth.keys"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cache.run_refresh_loop, 0.01)
            flaky.failing = True
            await wait_for_calls(6)
            assert cache.authenticate(_headers(x_api_key=key), NOW).key_name == "alice"
            flaky.failing = False
            await wait_for_calls(8)
            flaky.failing = True
            await wait_for_calls(12)
            nursery.cancel_scope.cancel()

    messages = [record.getMessage() for record in caplog.records]
    assert sum("cannot refresh API keys" in m for m in messages) == 2
    assert sum("works again" in m for m in messages) == 1
    assert cache.authenticate(_headers(x_api_key=key), NOW).key_name == "alice"
