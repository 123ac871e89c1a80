"""What every ``/admin`` route shares: who is asking, JSON in and out, errors.

An admin route is written as ``async def route(admin, request) -> Reply``:
it raises :class:`~ccag.errors.ApiError` for anything the client got wrong
and returns the status and JSON document otherwise. :func:`as_handler` turns
it into a server handler that answers errors in Anthropic's envelope.
"""

from __future__ import annotations

import datetime
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs

from ccag.api.responses import parse_json_body, send_error, send_json
from ccag.auth.errors import AuthError
from ccag.auth.keys import MAX_KEY_LIFETIME_SECONDS, NAME_RULE, Principal, name_problem
from ccag.auth.sessions import SessionManager, not_admin
from ccag.errors import ApiError
from ccag.server.types import Handler, Request, Responder
from ccag.store import Connection, Store, StoreConflict, StoreError, directory
from ccag.store.directory import UserEntry

logger = logging.getLogger(__name__)

T = TypeVar("T")


# Passwords set through the API: long enough to resist guessing, short
# enough that the KDF is never fed megabytes.
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024


# Responses may hold a key or a token: never cached anywhere.
NO_STORE = (("cache-control", "no-store"),)


@attrs.frozen
class Reply:
    status: int
    document: Any


@attrs.define
class Admin:
    """The services admin routes use."""

    services: Any
    sessions: SessionManager
    store: Store

    def now(self) -> float:
        return float(self.services.wall_clock())

    async def principal(self, request: Request) -> Principal:
        """Who asks, admin or member; a refusal is counted and raised."""
        try:
            return await self.sessions.authenticate(request.headers, self.now())
        except AuthError as error:
            self.services.telemetry.auth_failure(error.reason)
            raise

    async def admin(self, request: Request) -> Principal:
        """Who asks, who must be an admin (403 ``not_admin`` otherwise)."""
        principal = await self.principal(request)
        if not principal.is_admin:
            error = not_admin(principal)
            self.services.telemetry.auth_failure(error.reason)
            raise error
        return principal

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await self._run(work, readonly=True)

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await self._run(work, readonly=False)

    async def keys_changed(self) -> None:
        """Make a key change effective on this gateway now; others follow at
        their next refresh."""
        try:
            await self.services.keys.refresh()
        except StoreError as exc:
            logger.warning("key cache refresh after an admin change failed: %s", exc)

    async def _run(self, work: Callable[[Connection], T], *, readonly: bool) -> T:
        try:
            return await self.store.run(work, readonly=readonly)
        except StoreConflict:
            raise
        except StoreError as exc:
            logger.error("admin API cannot use the store: %s", exc)
            raise ApiError(503, "the gateway's store is unavailable; try again shortly") from exc


AdminRoute = Callable[[Admin, Request], Awaitable[Reply]]


def as_handler(admin: Admin, route: AdminRoute) -> Handler:
    """A server handler running ``route``, with errors as JSON envelopes."""

    async def handle(request: Request, responder: Responder) -> None:
        try:
            reply = await route(admin, request)
        except ApiError as error:
            await send_error(request, responder, error)
            return
        await send_json(responder, reply.status, reply.document, NO_STORE)

    return handle


# -- errors -----------------------------------------------------------------


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error")


def conflict(message: str) -> ApiError:
    return ApiError(409, message, "invalid_request_error")


def not_found(message: str) -> ApiError:
    return ApiError(404, message, "not_found_error")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, "permission_error")


def no_such_route(request: Request) -> ApiError:
    return not_found(f"{request.method} {request.path[:200]} is not a route of this gateway")


# -- store lookups ----------------------------------------------------------


def existing_team_id(connection: Connection, name: str, now: float) -> str:
    """The id of team ``name``, or a 400 saying to create it first."""
    team = directory.get_team(connection, name, now)
    if team is None:
        raise missing_subject("team", name)
    return team.id


def missing_subject(kind: str, name: str) -> ApiError:
    """The 400 for naming a ``user`` or ``team`` that does not exist.

    The advice names both ways to create it, the API route and the ``ccag
    admin`` command, because both kinds of caller read this message.
    """
    return bad_request(
        f"{kind} {name[:80]!r} does not exist; create it first "
        f"(POST /admin/{kind}s, or ccag admin {kind}s create NAME)"
    )


def refuse_removing_last_admin(connection: Connection, user: UserEntry) -> None:
    """A 409 if ``user`` is the only admin: the gateway would have none left."""
    if user.role == "admin" and directory.count_admins(connection) <= 1:
        raise conflict(f"{user.name!r} is the last admin; make another admin first")


def live_keys_conflict(kind: str, name: str, live_keys: int, whose: str) -> ApiError:
    """The 409 for deleting a user or team that still has live keys."""
    return conflict(
        f"{kind} {name!r} has {live_keys} live key(s); revoke them first, "
        f"or delete the {kind} with {whose} keys by adding ?force=true "
        "(ccag admin: run again with --force)"
    )


# -- request parts ----------------------------------------------------------


def path_id(request: Request, prefix: str) -> tuple[str, str | None]:
    """The ``{id}`` after ``prefix`` in the path, and an action after it.

    ``/admin/keys/key_1/revoke`` with prefix ``/admin/keys/`` gives
    ``("key_1", "revoke")``.

    Raises:
        ApiError: 404, the path has more segments than that.
    """
    rest = request.path[len(prefix):].rstrip("/")
    parts = [urllib.parse.unquote(part) for part in rest.split("/")]
    if not parts[0] or len(parts) > 2:
        raise no_such_route(request)
    return parts[0], parts[1] if len(parts) == 2 else None


ItemRoute = Callable[[Admin, Request, str], Awaitable[Reply]]


def item_route(
    request: Request, prefix: str, routes: Mapping[tuple[str, str | None], ItemRoute]
) -> tuple[ItemRoute, str]:
    """The route for ``{prefix}{id}[/{action}]`` by method and action, and the id.

    Raises:
        ApiError: 404, no route answers that method and action.
    """
    name_or_id, action = path_id(request, prefix)
    route = routes.get((request.method, action))
    if route is None:
        raise no_such_route(request)
    return route, name_or_id


def query(request: Request) -> dict[str, str]:
    """The query parameters, last value winning."""
    return {
        name: values[-1]
        for name, values in urllib.parse.parse_qs(request.query, keep_blank_values=True).items()
    }


def is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object body, refusing fields the route does not know."""
    document = parse_json_body(request)
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise bad_request(
            f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(allowed)}"
        )
    return document


def name_field(document: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    """A name from the body, checked against :data:`ccag.auth.keys.NAME_PATTERN`."""
    if field not in document or (document[field] is None and not required):
        if required:
            raise bad_request(f"{field}: required ({NAME_RULE})")
        return None
    value = document[field]
    if not isinstance(value, str):
        raise bad_request(f"{field}: must be a string, not {type(value).__name__}")
    problem = name_problem(value)
    if problem is not None:
        raise bad_request(f"{field}: {problem}")
    return value


def role_field(document: Mapping[str, Any], field: str = "role") -> str | None:
    value = document.get(field)
    if value is None:
        return None
    if value not in ("admin", "member"):
        raise bad_request(f"{field}: must be \"admin\" or \"member\", not {value!r:.80}")
    return str(value)


def password_field(document: Mapping[str, Any]) -> str | None:
    value = document.get("password")
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"password: must be a string, not {type(value).__name__}")
    if not MIN_PASSWORD_CHARS <= len(value) <= MAX_PASSWORD_CHARS:
        raise bad_request(
            f"password: must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
    return value


def expiry_field(document: Mapping[str, Any], now: float) -> tuple[bool, float | None]:
    """The expiry a body asks for: ``expires_in`` seconds or ``expires_at``.

    ``expires_at`` is an RFC 3339 time with a zone (``2030-01-01T00:00:00Z``)
    or null for "never".

    Returns:
        (whether the body sets an expiry, the Unix time or None for never).
    """
    if "expires_in" in document and "expires_at" in document:
        raise bad_request("give expires_in or expires_at, not both")

    if "expires_in" in document:
        seconds = document["expires_in"]
        is_number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        if not is_number or not math.isfinite(seconds) or seconds <= 0:
            raise bad_request(f"expires_in: must be a positive number of seconds, not {seconds!r:.80}")
        if seconds > MAX_KEY_LIFETIME_SECONDS:
            raise bad_request("expires_in: more than ten years; is the unit seconds?")
        return True, now + float(seconds)

    if "expires_at" in document:
        value = document["expires_at"]
        if value is None:
            return True, None
        if not isinstance(value, str):
            raise bad_request("expires_at: must be an RFC 3339 time such as 2030-01-01T00:00:00Z, or null")
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise bad_request(f"expires_at: {value[:80]!r} is not an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise bad_request("expires_at: needs a time zone, such as a trailing Z")
        timestamp = moment.timestamp()
        if timestamp <= now:
            raise bad_request(f"expires_at: {value[:80]} is in the past")
        if timestamp > now + MAX_KEY_LIFETIME_SECONDS:
            raise bad_request("expires_at: more than ten years away")
        return True, timestamp

    return False, None
