"""The bootstrap admin's password policy (ensure_bootstrap_admin)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from ccag.auth.errors import AuthError
from ccag.auth.keys import KeyCache
from ccag.auth.sessions import (
    DEFAULT_ADMIN_PASSWORD,
    SessionManager,
    ensure_bootstrap_admin,
)
from ccag.config import load_config
from ccag.errors import ConfigError
from ccag.store import Store

NOW = 1_700_000_000.0


def _config(**values: Any) -> Any:
    return load_config(values, environ={})


async def _can_log_in(store: Store, password: str) -> bool:
    keys = KeyCache(store)
    manager = SessionManager(store, _config(), keys)
    try:
        await manager.login("admin", password, "127.0.0.1", NOW)
    except AuthError:
        return False
    return True


async def test_default_password_configured_outside_simulator_is_refused(store: Store) -> None:
    with trio.fail_after(10), pytest.raises(ConfigError, match="allow_default_admin_password"):
        await ensure_bootstrap_admin(store, _config(admin_password="admin"), now=NOW)


async def test_default_password_is_accepted_when_allowed_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(admin_password="admin", allow_default_admin_password="true")
    with trio.fail_after(10), caplog.at_level(logging.WARNING):
        assert await ensure_bootstrap_admin(store, config, now=NOW) is None
        assert await _can_log_in(store, DEFAULT_ADMIN_PASSWORD)
    assert "well-known default password" in caplog.text


async def test_simulator_mode_without_a_password_uses_the_default(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10), caplog.at_level(logging.WARNING):
        assert await ensure_bootstrap_admin(store, _config(), simulator_mode=True, now=NOW) is None
        assert await _can_log_in(store, "admin")
    assert "simulator mode" in caplog.text


async def test_default_password_left_from_simulator_mode_is_replaced(store: Store) -> None:
    with trio.fail_after(20):
        await ensure_bootstrap_admin(store, _config(), simulator_mode=True, now=NOW)
        generated = await ensure_bootstrap_admin(store, _config(), now=NOW)
        assert generated is not None and generated != DEFAULT_ADMIN_PASSWORD
        assert not await _can_log_in(store, DEFAULT_ADMIN_PASSWORD)
        assert await _can_log_in(store, generated)
        # Once replaced, later starts leave the generated password alone.
        assert await ensure_bootstrap_admin(store, _config(), now=NOW) is None
        assert await _can_log_in(store, generated)


async def test_generated_password_outside_simulator_is_not_the_default(store: Store) -> None:
    with trio.fail_after(10):
        generated = await ensure_bootstrap_admin(store, _config(), now=NOW)
        assert generated and generated != DEFAULT_ADMIN_PASSWORD
        assert await _can_log_in(store, generated)
