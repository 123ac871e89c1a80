"""API keys: their format, their hashing, and the in-memory cache that checks them.

The request path never reads the database. :class:`KeyCache` holds every
key's hash and owner in a dict that a background loop replaces wholesale every
few seconds; :meth:`KeyCache.authenticate` is a dict lookup and a SHA-256.
A revoked or newly created key therefore takes effect on every gateway
sharing the store within one refresh interval.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ccag.auth.errors import (
    EXPIRED_KEY,
    INVALID_KEY,
    MISSING_KEY,
    REVOKED_KEY,
    AuthError,
    most_specific,
)
from ccag.server.types import Headers
from ccag.store import Connection, Store, StoreError
from ccag.store.identity import (
    KeyRecord,
    ensure_team,
    ensure_user,
    insert_key,
    load_keys,
)

logger = logging.getLogger(__name__)

# Names of users, teams and keys: short, printable, and safe in a URL path
# segment and a terminal table without quoting. The admin API and the
# offline CLI both check names against this.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
NAME_RULE = "1 to 64 characters: letters, digits and . _ @ + -, starting with a letter or digit"

# A key may be given at most ten years of life; beyond that the expiry is
# almost certainly a unit mistake (milliseconds for seconds).
MAX_KEY_LIFETIME_SECONDS = 10 * 365 * 86400.0


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid user, team or key name, or None if it is."""
    if NAME_PATTERN.fullmatch(value):
        return None
    return f"{value[:80]!r} is not a valid name ({NAME_RULE})"


KEY_PREFIX = "sk-ccag-"

# 32 random bytes: 256 bits, written as 43 url-safe base64 characters.
KEY_RANDOM_BYTES = 32
KEY_RANDOM_CHARS = 43
KEY_LENGTH = len(KEY_PREFIX) + KEY_RANDOM_CHARS

# Characters of the random part shown by ``keys list`` and in masked logs:
# enough to tell keys apart, far too few to help guess one.
SHOWN_CHARS = 4


def generate_key() -> str:
    """A new random API key, ``sk-ccag-`` and 43 url-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex.

    A fast hash is right here, unlike for passwords: a key is 256 bits from
    ``secrets``, so no amount of hashing speed makes guessing one feasible,
    and a slow KDF would cost every request.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_prefix(key: str) -> str:
    """The part of a key that may be displayed, such as ``sk-ccag-abcd``."""
    return key[: len(KEY_PREFIX) + SHOWN_CHARS]


def mask_key(key: str) -> str:
    """A key as it may appear in logs: ``sk-ccag-abcd…wxyz``, never whole.

    Anything too short to mask safely shows only its length.
    """
    random_part = key.removeprefix(KEY_PREFIX)
    if len(random_part) < 4 * SHOWN_CHARS:
        return f"<{len(key)} chars>"
    head = key[: len(key) - len(random_part) + SHOWN_CHARS]
    return f"{head}…{random_part[-SHOWN_CHARS:]}"


@attrs.frozen
class CreatedKey:
    """A key just made: the only moment the key itself is known."""

    key: str
    id: str
    name: str


def issue_key(
    connection: Connection,
    name: str,
    *,
    user: str | None = None,
    team: str | None = None,
    role: str | None = None,
    expires_at: float | None = None,
    now: float,
) -> CreatedKey:
    """Generate a key and store its hash, as one step of a unit of work.

    A user or team named but not yet known is created; a new user gets
    ``role``, or member.

    Args:
        name: the key's name; no other live key may have it.
        user: the owning user's name.
        team: the owning team's name (a key may have both).
        role: overrides the owner's role for requests made with this key.
        expires_at: Unix time after which the key is refused, or None.
        now: Unix time of creation.

    Raises:
        ValueError: neither user nor team was given.
        StoreConflict: a live key already has this name.
    """
    if user is None and team is None:
        raise ValueError("a key needs a user or a team")
    user_id = ensure_user(connection, user, role or "member", now) if user else None
    team_id = ensure_team(connection, team, now) if team else None
    key = generate_key()
    key_id = insert_key(
        connection,
        name=name,
        key_hash=hash_key(key),
        key_prefix=key_prefix(key),
        user_id=user_id,
        team_id=team_id,
        role=role,
        now=now,
        expires_at=expires_at,
    )
    return CreatedKey(key, key_id, name)


async def create_key(
    store: Store,
    name: str,
    *,
    user: str | None = None,
    team: str | None = None,
    role: str | None = None,
    expires_at: float | None = None,
    now: float | None = None,
) -> str:
    """:func:`issue_key` in its own transaction, from Trio; returns the key.

    Caches learn of the key at their next refresh.
    """
    created_at = time.time() if now is None else now
    created = await store.run(
        lambda connection: issue_key(
            connection, name, user=user, team=team, role=role,
            expires_at=expires_at, now=created_at,
        )
    )
    return created.key


def _looks_like_key(text: str) -> bool:
    return len(text) == KEY_LENGTH and text.startswith(KEY_PREFIX)


def format_time(timestamp: float) -> str:
    """Unix seconds as RFC 3339 UTC, for messages and listings.

    Never fails: a stored time outside the years 1 to 9999 (a store written by
    an older, unchecked version) is shown as its raw number of seconds, so a
    listing still works and shows the bad value.
    """
    try:
        moment = time.gmtime(timestamp)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp!r} (Unix seconds, out of range)"
    if not 1 <= moment.tm_year <= 9999:
        return f"{timestamp!r} (Unix seconds, out of range)"
    # %Y does not pad years below 1000 on every platform; RFC 3339 needs four digits.
    return f"{moment.tm_year:04d}" + time.strftime("-%m-%dT%H:%M:%SZ", moment)


def format_optional_time(timestamp: float | None) -> str | None:
    """:func:`format_time`, passing None ("never", "not yet") through."""
    return format_time(timestamp) if timestamp is not None else None


KEY_STATUSES = ("active", "expired", "revoked")


def key_status(record: KeyRecord, now: float) -> str:
    """One of :data:`KEY_STATUSES`; a revoked key is "revoked" even once expired."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and now >= record.expires_at:
        return "expired"
    return "active"


def key_listing(record: KeyRecord, now: float) -> dict[str, Any]:
    """A key as listings show it (``ccag keys list``, ``/admin/keys``): never
    the key, only its first characters."""
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.key_prefix,
        "user": record.user_name,
        "team": record.team_name,
        "role": record.role,
        "created_at": format_time(record.created_at),
        "expires_at": format_optional_time(record.expires_at),
        "revoked_at": format_optional_time(record.revoked_at),
        "status": key_status(record, now),
    }


@attrs.frozen
class KeyInfo:
    """What the cache knows about one key."""

    id: str
    name: str
    user: str | None
    team: str | None
    role: str
    expires_at: float | None
    revoked: bool

    @classmethod
    def from_record(cls, record: KeyRecord) -> KeyInfo:
        return cls(
            id=record.id,
            name=record.name,
            user=record.user_name,
            team=record.team_name,
            role=record.role,
            expires_at=record.expires_at,
            revoked=record.revoked_at is not None,
        )

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@attrs.frozen
class Principal:
    """Who a request acts as.

    ``key_id`` and ``key_name`` are None for an admin session.
    """

    key_id: str | None
    key_name: str | None
    user: str | None
    team: str | None
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def from_key(cls, info: KeyInfo) -> Principal:
        return cls(info.id, info.name, info.user, info.team, info.role)


def bearer_token(headers: Headers) -> str | None:
    """The credential of an ``Authorization: Bearer`` header, if any."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def presented_credentials(headers: Headers) -> list[str]:
    """The credentials a request offers: ``x-api-key``, then a bearer token."""
    found: list[str] = []
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        found.append(api_key.strip())
    token = bearer_token(headers)
    if token is not None and token not in found:
        found.append(token)
    return found


def missing_credentials() -> AuthError:
    return AuthError(
        401,
        "missing API key: send your ccag key in the x-api-key header or as "
        "Authorization: Bearer <key> (set ANTHROPIC_API_KEY); an administrator "
        "creates keys with `ccag keys create NAME`",
        MISSING_KEY,
    )


# How a refusal names where the key came from.
API_KEY_HEADER = "x-api-key"
BEARER_HEADER = "bearer token"


def _refusal(info: KeyInfo | None, header: str = API_KEY_HEADER) -> AuthError:
    if info is None:
        return AuthError(
            401,
            f"invalid {header}: this key is not known to the gateway; check that "
            "ANTHROPIC_API_KEY holds a key from `ccag keys create` (a key created "
            "in the last few seconds is accepted once the gateway refreshes its keys)",
            INVALID_KEY,
        )
    if info.revoked:
        return AuthError(
            401,
            f"invalid {header}: key {info.name!r} has been revoked; ask your "
            "ccag administrator for a new one",
            REVOKED_KEY,
        )
    assert info.expires_at is not None
    return AuthError(
        401,
        f"invalid {header}: key {info.name!r} expired at "
        f"{format_time(info.expires_at)}; ask your ccag administrator for a new one",
        EXPIRED_KEY,
    )


class KeyCache:
    """Every API key, by hash, in memory.

    Args:
        store: where keys are loaded from, in a worker thread.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_hash: Mapping[str, KeyInfo] = {}
        self._is_failing = False
        self.loaded_at: float | None = None

    def count(self) -> int:
        """Keys in the cache, revoked and expired ones included."""
        return len(self._by_hash)

    async def refresh(self) -> None:
        """Reload every key from the store and swap the map in at once.

        Raises:
            StoreError: the store could not be read; the old keys stay.
        """
        records = await self._store.run(load_keys, readonly=True)
        self._by_hash = {record.key_hash: KeyInfo.from_record(record) for record in records}
        self.loaded_at = trio.current_time()

    async def run_refresh_loop(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled.

        Call :meth:`refresh` once before serving; this loop waits first. A
        store failure keeps the last good keys and is logged once, when it
        starts, and once more when the store is back.
        """
        while True:
            await trio.sleep(interval)
            try:
                await self.refresh()
            except StoreError as exc:
                if not self._is_failing:
                    logger.error("cannot refresh API keys, keeping the last ones: %s", exc)
                self._is_failing = True
                continue
            if self._is_failing:
                logger.warning("API key refresh works again (%d keys)", self.count())
            self._is_failing = False

    def lookup(self, key: str) -> KeyInfo | None:
        """The cached facts about ``key``, or None if it is unknown."""
        if not _looks_like_key(key):
            return None
        return self._by_hash.get(hash_key(key))

    def check_key(self, key: str, now: float, header: str = API_KEY_HEADER) -> Principal:
        """The principal of one credential.

        Args:
            key: the credential.
            now: Unix time, for expiry.
            header: where it came from, named in a refusal.

        Raises:
            AuthError: 401, the key is unknown, revoked or expired.
        """
        info = self.lookup(key)
        if info is None or info.revoked or info.is_expired(now):
            raise _refusal(info, header)
        return Principal.from_key(info)

    def authenticate(self, headers: Headers, now: float) -> Principal:
        """Who sent this request, from the in-memory keys only.

        Accepts ``x-api-key`` and ``Authorization: Bearer``; when both are
        present, either valid one is enough.

        Args:
            headers: the request headers.
            now: Unix time, for expiry.

        Raises:
            AuthError: 401 with reason ``missing_key``, ``invalid_key``,
                ``revoked_key`` or ``expired_key``.
        """
        credentials = presented_credentials(headers)
        if not credentials:
            raise missing_credentials()

        api_key = (headers.get("x-api-key") or "").strip()
        refusals: list[AuthError] = []
        for credential in credentials:
            header = API_KEY_HEADER if credential == api_key else BEARER_HEADER
            try:
                return self.check_key(credential, now, header)
            except AuthError as exc:
                refusals.append(exc)
        raise most_specific(refusals)
