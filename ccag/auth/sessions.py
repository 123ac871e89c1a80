"""Admin identity: the bootstrap admin, password logins, session tokens, and
the admin check for admin endpoints.

Sessions live in the store, so any gateway sharing it accepts a token another
issued. Each gateway keeps the sessions it has seen in memory and re-reads one
from the store when it is unknown or was last checked more than
:data:`SESSION_RECHECK_SECONDS` ago; a logout or role change elsewhere thus
takes effect within that time. Only admin endpoints reach this module, never
``/v1/messages``, so reading the store on a miss is acceptable here.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio

from ccag.auth import throttle_store
from ccag.auth.errors import (
    EXPIRED_SESSION,
    INVALID_KEY,
    INVALID_SESSION,
    LOGIN_FAILED,
    MISSING_KEY,
    NOT_ADMIN,
    AuthError,
    most_specific,
)
from ccag.auth.keys import (
    KEY_PREFIX,
    KeyCache,
    Principal,
    presented_credentials,
)
from ccag.auth.passwords import (
    dummy_hash,
    generate_password,
    hash_password,
    verify_password,
)
from ccag.errors import ApiError, ConfigError
from ccag.server.types import Headers
from ccag.startup_log import startup_logger
from ccag.store import Connection, Store, StoreError, identity

logger = logging.getLogger(__name__)

T = TypeVar("T")

SESSION_PREFIX = "ccag-session-"

# The bootstrap admin's well-known password: convenient for a local demo,
# an open door anywhere else, hence refused outside simulator mode unless
# ``allow_default_admin_password`` says the operator means it.
DEFAULT_ADMIN_PASSWORD = "admin"
SESSION_RANDOM_BYTES = 32
SESSION_TOKEN_LENGTH = len(SESSION_PREFIX) + 43

# How stale a cached session may be before the store is asked again.
SESSION_RECHECK_SECONDS = 5.0
# Cached sessions kept per gateway; past this the cache starts over, which
# costs one store read per active admin.
MAX_CACHED_SESSIONS = 10_000

# Login throttling, per client address: this many failures within the window
# lock the address out for the lockout time. Five tries a minute make online
# guessing of even a weak password slow; a locked-out admin waits minutes.
MAX_LOGIN_FAILURES = 5
LOGIN_FAILURE_WINDOW_SECONDS = 60.0
LOGIN_LOCKOUT_SECONDS = 300.0
# And per account (the name tried), against a guesser spreading its tries
# over many addresses. The trade-off: the lockout refuses everyone, the real
# admin too, so it must stay short, and a short lockout lets the guesser try
# again soon. Ten failures locking the name for two minutes cap a guesser at
# about 7,000 tries a day however many addresses it has: a generated (128
# bit) or otherwise strong password survives that, a dictionary word may not.
# A guesser can keep an account locked by failing ten times every two
# minutes; the admin gets in at most two minutes after it stops. The limit is
# above what one address may fail, so only a spread guess reaches it.
MAX_ACCOUNT_LOGIN_FAILURES = 10
ACCOUNT_LOGIN_FAILURE_WINDOW_SECONDS = 60.0
ACCOUNT_LOGIN_LOCKOUT_SECONDS = 120.0
# Password checks running at once: scrypt takes 16 MiB and tens of
# milliseconds each, so a login flood must not take every core and thread.
MAX_CONCURRENT_PASSWORD_CHECKS = 4


def session_token_hash(token: str) -> str:
    """The hash a session token is stored under."""
    return _token_hash(token)


def _token_hash(token: str) -> str:
    # Session tokens are 256 random bits, so SHA-256 suffices (see hash_key).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@attrs.frozen
class IssuedSession:
    """A session token, given to the client once, and its expiry (Unix time)."""

    token: str
    expires_at: float


@attrs.frozen
class FailureLimit:
    """``failures`` within ``window`` seconds lock out until ``lockout``
    seconds after the last of them, and at least until the first leaves the
    window."""

    failures: int
    window: float
    lockout: float

    @property
    def retention(self) -> float:
        """How far back a failure can still matter to a lockout."""
        return self.window + self.lockout


CLIENT_FAILURE_LIMIT = FailureLimit(
    MAX_LOGIN_FAILURES, LOGIN_FAILURE_WINDOW_SECONDS, LOGIN_LOCKOUT_SECONDS
)
ACCOUNT_FAILURE_LIMIT = FailureLimit(
    MAX_ACCOUNT_LOGIN_FAILURES, ACCOUNT_LOGIN_FAILURE_WINDOW_SECONDS, ACCOUNT_LOGIN_LOCKOUT_SECONDS
)


def locked_until(failure_times: list[float], limit: FailureLimit) -> float:
    """When the lockout these failures (oldest first) caused ends; 0 for none."""
    until = 0.0
    for last in range(limit.failures - 1, len(failure_times)):
        first = failure_times[last - limit.failures + 1]
        if failure_times[last] - first < limit.window:
            until = max(until, failure_times[last] + limit.lockout, first + limit.window)
    return until


@attrs.frozen
class LoginAttempt:
    """A login attempt counted as failed until it succeeds."""

    id: str
    client: str
    username: str


@attrs.frozen
class _Verdict:
    client_until: float
    account_until: float
    # The attempt just counted is the one that reached the limit.
    locks_client: bool = False
    locks_account: bool = False


class LoginThrottle:
    """Counts failed logins per client address and per account name, in the
    store, and locks out guessers.

    An attempt counts as a failure from the moment it starts until it
    succeeds, so many attempts sent at once are limited like sequential ones.
    The count lives in the store, so gateways sharing one (behind a load
    balancer) share it, and a restart keeps it. Each gateway's store
    transactions run one at a time, so only attempts checked at the same
    instant on different gateways can pass the limit, by one per gateway.
    Nothing is kept in memory; the table is pruned by age.

    Args:
        store: where the attempts are counted.
        client_limit: per client address (default :data:`CLIENT_FAILURE_LIMIT`).
        account_limit: per account name tried, whether it exists or not, so
            a refusal reveals nothing (default :data:`ACCOUNT_FAILURE_LIMIT`).
    """

    def __init__(
        self,
        store: Store,
        client_limit: FailureLimit | None = None,
        account_limit: FailureLimit | None = None,
    ) -> None:
        self._store = store
        self._client_limit = client_limit or CLIENT_FAILURE_LIMIT
        self._account_limit = account_limit or ACCOUNT_FAILURE_LIMIT

    async def attempt_started(self, client: str, username: str, now: float) -> LoginAttempt:
        """Count an attempt, or refuse it if its address or account is locked out.

        Also prunes failures too old to matter.

        Returns:
            The attempt, for :meth:`attempt_succeeded`.

        Raises:
            AuthError: 429 with ``retry-after``; reason ``login_failed``.
            StoreError: the store is unavailable.
        """
        attempt = LoginAttempt(throttle_store.new_attempt_id(), client, username)
        account = throttle_store.account_hash(username)
        client_limit, account_limit = self._client_limit, self._account_limit

        def check_and_count(connection: Connection) -> _Verdict:
            retention = max(client_limit.retention, account_limit.retention)
            throttle_store.prune_failures(connection, now - retention)
            by_client = throttle_store.failures_of_client(
                connection, client, now - client_limit.retention)
            by_account = throttle_store.failures_of_account(
                connection, account, now - account_limit.retention)
            verdict = _Verdict(
                locked_until(by_client, client_limit), locked_until(by_account, account_limit)
            )
            if max(verdict.client_until, verdict.account_until) > now:
                return verdict

            throttle_store.record_attempt(connection, attempt.id, client, account, now)
            return attrs.evolve(
                verdict,
                locks_client=locked_until(sorted([*by_client, now]), client_limit) > now,
                locks_account=locked_until(sorted([*by_account, now]), account_limit) > now,
            )

        verdict = await self._store.run(check_and_count)

        if verdict.client_until > now:
            raise _too_many_failures("from your address", verdict.client_until - now)
        if verdict.account_until > now:
            raise _too_many_failures("for this account", verdict.account_until - now)
        # An operator must see a guesser, or a colleague locked out.
        if verdict.locks_client:
            logger.warning(
                "login: %s reached %d failed attempts within %.0f s; locked out for %.0f s",
                client, client_limit.failures, client_limit.window, client_limit.lockout,
            )
        if verdict.locks_account:
            logger.warning(
                "login: user %r reached %d failed attempts within %.0f s (the last from %s);"
                " locked out for %.0f s",
                username, account_limit.failures, account_limit.window, client,
                account_limit.lockout,
            )
        return attempt

    def attempt_succeeded(self, connection: Connection, attempt: LoginAttempt) -> None:
        """Uncount a successful attempt (earlier failures still count).

        A step of the unit of work that opens the session, so the attempt is
        uncounted exactly when the login takes effect.
        """
        throttle_store.forget_attempt(connection, attempt.id)


def _too_many_failures(whose: str, wait_seconds: float) -> AuthError:
    wait = math.ceil(wait_seconds)
    return AuthError(
        429,
        f"too many failed logins {whose}; try again in {wait} seconds",
        LOGIN_FAILED,
        headers=[("retry-after", str(wait))],
    )


@attrs.frozen
class _CachedSession:
    record: identity.SessionRecord
    checked_at: float


class SessionManager:
    """Logins, session tokens and the admin check.

    Args:
        store: holds users and sessions.
        config: provides ``session_ttl``, the seconds a new session lasts.
        keys: the API key cache (an admin-role key also opens admin endpoints).
        throttle: failed-login bookkeeping (default: one on ``store``).
    """

    def __init__(
        self,
        store: Store,
        config: Any,
        keys: KeyCache,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._session_ttl: float = config.session_ttl
        self._throttle = throttle or LoginThrottle(store)
        self._password_checks = trio.CapacityLimiter(MAX_CONCURRENT_PASSWORD_CHECKS)
        self._sessions: dict[str, _CachedSession] = {}

    async def login(
        self, username: str, password: str, client_addr: str, now: float
    ) -> IssuedSession:
        """Check a password and open a session.

        Args:
            client_addr: the client's address, for throttling.
            now: Unix time.

        Raises:
            AuthError: 401 for a wrong name or password, 429 when throttled;
                reason ``login_failed`` for both.
            ApiError: 503, the store is unavailable.
        """
        try:
            attempt = await self._throttle.attempt_started(client_addr, username, now)
        except StoreError as exc:
            raise _store_unavailable(exc) from exc

        user = await self._read(functools.partial(identity.find_user, name=username))
        stored_hash = user.password_hash if user is not None else None
        is_valid = await trio.to_thread.run_sync(
            lambda: verify_password(password, stored_hash or dummy_hash()),
            limiter=self._password_checks,
        )
        if user is None or stored_hash is None or not is_valid:
            logger.info("failed admin login for user %r", username)
            raise AuthError(401, "invalid username or password", LOGIN_FAILED)

        token = SESSION_PREFIX + secrets.token_urlsafe(SESSION_RANDOM_BYTES)
        expires_at = now + self._session_ttl
        token_hash = _token_hash(token)

        def record_session(connection: Connection) -> None:
            identity.delete_expired_sessions(connection, now)
            identity.insert_session(connection, token_hash, user.id, now, expires_at)
            self._throttle.attempt_succeeded(connection, attempt)

        await self._write(record_session)
        self._remember(token_hash, identity.SessionRecord(user.name, user.role, expires_at), now)
        logger.info("admin login for user %r", username)
        return IssuedSession(token, expires_at)

    async def logout(self, token: str) -> None:
        """End a session, on every gateway within the recheck time."""
        token_hash = _token_hash(token)
        self._sessions.pop(token_hash, None)
        await self._write(functools.partial(identity.delete_session, token_hash=token_hash))

    def forget_user_sessions(self, user_name: str, keep_token_hash: str | None) -> None:
        """Drop this gateway's cached sessions of a user (but one), after the
        store's were deleted, so they are refused here at once; other gateways
        refuse them within the recheck time."""
        for token_hash, cached in list(self._sessions.items()):
            if cached.record.user_name == user_name and token_hash != keep_token_hash:
                del self._sessions[token_hash]

    async def authorize_admin(self, headers: Headers, now: float) -> Principal:
        """The admin a request acts as.

        Accepts ``Authorization: Bearer`` with an admin session token or an
        API key whose role is admin (also ``x-api-key`` for keys).

        Raises:
            AuthError: 401 (``missing_key``; ``invalid_key``, ``revoked_key``,
                ``expired_key`` for API keys; ``invalid_session``,
                ``expired_session`` for session tokens) or 403 (``not_admin``).
            ApiError: 503, the store is unavailable.
        """
        principal = await self.authenticate(headers, now)
        if not principal.is_admin:
            raise not_admin(principal)
        return principal

    async def authenticate(self, headers: Headers, now: float) -> Principal:
        """Who a request to the admin API acts as, admin or member.

        Accepts the same credentials as :meth:`authorize_admin`; when several
        are valid, an admin one is preferred.

        Raises:
            AuthError: 401, as for :meth:`authorize_admin`.
            ApiError: 503, the store is unavailable.
        """
        credentials = presented_credentials(headers)
        if not credentials:
            raise AuthError(
                401,
                "missing credentials: send Authorization: Bearer with a session token "
                "from POST /auth/login (or `ccag admin login`) or an API key",
                MISSING_KEY,
            )

        refusals: list[AuthError] = []
        principals: list[Principal] = []
        for credential in credentials:
            try:
                principals.append(await self._principal(credential, now))
            except AuthError as exc:
                refusals.append(exc)
        for principal in principals:
            if principal.is_admin:
                return principal
        if principals:
            return principals[0]
        raise most_specific(refusals)

    async def _principal(self, credential: str, now: float) -> Principal:
        if credential.startswith(KEY_PREFIX):
            return self._keys.check_key(credential, now)

        if not credential.startswith(SESSION_PREFIX):
            raise AuthError(
                401,
                "invalid credentials: send Authorization: Bearer with a session "
                "token (from POST /auth/login) or an API key",
                INVALID_KEY,
            )
        record = None
        if len(credential) == SESSION_TOKEN_LENGTH:
            record = await self._session(_token_hash(credential), now)
        if record is None:
            raise AuthError(
                401,
                "invalid session token: it is unknown or was logged out; log in "
                "again with POST /auth/login",
                INVALID_SESSION,
            )
        if now >= record.expires_at:
            raise AuthError(
                401,
                "admin session expired; log in again with POST /auth/login",
                EXPIRED_SESSION,
            )
        return Principal(None, None, record.user_name, None, record.role)

    async def _session(self, token_hash: str, now: float) -> identity.SessionRecord | None:
        cached = self._sessions.get(token_hash)
        if cached is not None and now - cached.checked_at < SESSION_RECHECK_SECONDS:
            return cached.record

        record = await self._read(functools.partial(identity.find_session, token_hash=token_hash))
        if record is None:
            self._sessions.pop(token_hash, None)
        else:
            self._remember(token_hash, record, now)
        return record

    def _remember(self, token_hash: str, record: identity.SessionRecord, now: float) -> None:
        if len(self._sessions) >= MAX_CACHED_SESSIONS:
            self._sessions.clear()
        self._sessions[token_hash] = _CachedSession(record, now)

    async def _read(self, work: Callable[[Connection], T]) -> T:
        try:
            return await self._store.run(work, readonly=True)
        except StoreError as exc:
            raise _store_unavailable(exc) from exc

    async def _write(self, work: Callable[[Connection], T]) -> T:
        try:
            return await self._store.run(work)
        except StoreError as exc:
            raise _store_unavailable(exc) from exc


def not_admin(principal: Principal) -> AuthError:
    """The 403 for a valid principal without the admin role."""
    who = principal.user or principal.team or principal.key_name
    return AuthError(
        403,
        f"permission denied: {who!r} is not an admin; this needs an admin "
        "session or an API key with the admin role",
        NOT_ADMIN,
    )


def _store_unavailable(exc: StoreError) -> ApiError:
    logger.error("admin authentication cannot use the store: %s", exc)
    return ApiError(503, "the gateway's store is unavailable; try again shortly")


async def ensure_bootstrap_admin(
    store: Store,
    config: Any,
    *,
    simulator_mode: bool = False,
    now: float | None = None,
) -> str | None:
    """Make sure the configured admin user exists and can log in.

    The password policy:

    * ``admin_password`` set: the admin's password is set to it at every
      start (so changing the setting changes the password).
    * The well-known :data:`DEFAULT_ADMIN_PASSWORD` is accepted only in
      simulator mode or with ``allow_default_admin_password``, always with a
      warning; otherwise configuring it stops the start with a ConfigError.
    * ``admin_password`` unset, in simulator mode or with the default allowed:
      a new admin gets the default password (an existing one keeps theirs).
    * ``admin_password`` unset otherwise: a password is generated the first
      time only and logged once at WARNING; an admin still holding the
      default password (say, from an earlier simulator run on the same store)
      gets a generated one instead.

    Args:
        config: provides ``admin_username``, ``admin_password`` and
            ``allow_default_admin_password``.
        simulator_mode: the gateway serves from the simulator.
        now: Unix time recorded as the user's creation time (default: now).

    Returns:
        The generated password, or None if none was generated.

    Raises:
        ConfigError: the default password is configured but not allowed.
    """
    created_at = time.time() if now is None else now
    name: str = config.admin_username
    configured: str | None = config.admin_password
    allow_default = simulator_mode or bool(
        getattr(config, "allow_default_admin_password", False)
    )
    if configured == DEFAULT_ADMIN_PASSWORD and not allow_default:
        raise ConfigError(
            f"admin_password is the well-known default {DEFAULT_ADMIN_PASSWORD!r}, "
            "refused outside simulator mode: choose another password, or set "
            "allow_default_admin_password (CCAG_ALLOW_DEFAULT_ADMIN_PASSWORD=true) "
            "to accept the risk"
        )

    if configured:
        password, only_if_unset = configured, False
    elif allow_default:
        password, only_if_unset = DEFAULT_ADMIN_PASSWORD, True
    else:
        password, only_if_unset = generate_password(), True
        if await _holds_default_password(store, name):
            only_if_unset = False
    password_hash = await trio.to_thread.run_sync(hash_password, password)

    is_set = await store.run(
        functools.partial(
            identity.set_admin_password,
            name=name,
            password_hash=password_hash,
            now=created_at,
            only_if_unset=only_if_unset,
        )
    )
    if password == DEFAULT_ADMIN_PASSWORD and (is_set or configured):
        startup_logger.warning(
            "admin user %r has the well-known default password %r%s; anyone who can "
            "reach this gateway can administer it",
            name,
            DEFAULT_ADMIN_PASSWORD,
            " (simulator mode)" if simulator_mode else " (allow_default_admin_password)",
        )
    if configured or not is_set or password == DEFAULT_ADMIN_PASSWORD:
        return None
    startup_logger.warning(
        "%s admin user %r%s with the generated password %s (shown only this "
        "once; set admin_password to choose one)",
        "replaced the default password of" if not only_if_unset else "created",
        name,
        " for simulator mode" if simulator_mode else "",
        password,
    )
    return password


async def _holds_default_password(store: Store, name: str) -> bool:
    user = await store.run(functools.partial(identity.find_user, name=name), readonly=True)
    if user is None or user.password_hash is None:
        return False
    stored = user.password_hash
    return await trio.to_thread.run_sync(verify_password, DEFAULT_ADMIN_PASSWORD, stored)
