"""``POST /auth/login``: trade an admin's name and password for a session token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ccag.auth.errors import AuthError
from ccag.auth.keys import format_time
from ccag.auth.sessions import SessionManager
from ccag.errors import ApiError, invalid_request
from ccag.server.types import Request, Responder

# Longest name and password accepted; real ones are far shorter, and the cap
# keeps a hostile body from feeding megabytes to the password KDF.
MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024


def _credentials(body: bytes) -> tuple[str, str]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_request(
            'the body must be JSON: {"username": "...", "password": "..."}'
        ) from None
    if not isinstance(payload, dict):
        raise invalid_request('the body must be a JSON object with "username" and "password"')

    fields: list[str] = []
    for name, limit in (("username", MAX_USERNAME_CHARS), ("password", MAX_PASSWORD_CHARS)):
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            raise invalid_request(f"{name}: a non-empty string is required")
        if len(value) > limit:
            raise invalid_request(f"{name}: longer than {limit} characters")
        fields.append(value)
    return fields[0], fields[1]


async def _send_json(
    responder: Responder,
    status: int,
    body: bytes,
    extra_headers: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        # A token must not linger in any cache.
        ("cache-control", "no-store"),
    ]
    await responder.start_response(status, headers + list(extra_headers or ()))
    await responder.send_data(body)
    await responder.end_response()


async def login_handler(
    request: Request,
    responder: Responder,
    sessions: SessionManager,
    record_failure: Callable[[str], None] | None = None,
) -> None:
    """Answer ``POST /auth/login``.

    ``{"username", "password"}`` gets 200 ``{"token", "expires_at"}``
    (``expires_at`` in RFC 3339 UTC). Errors use Anthropic's envelope: 400
    for a malformed body, 401 for bad credentials, 429 with ``retry-after``
    while the client is throttled.

    Args:
        record_failure: called with the failure reason of a 401/429, for the
            ``ccag.auth_failures.total`` metric.
    """
    client = request.client[0] if request.client else "unknown"
    try:
        username, password = _credentials(request.body)
        issued = await sessions.login(username, password, client, time.time())
    except ApiError as exc:
        if isinstance(exc, AuthError) and record_failure is not None:
            record_failure(exc.reason)
        await _send_json(responder, exc.status, exc.body(request.request_id), exc.headers)
        return

    body = json.dumps({"token": issued.token, "expires_at": format_time(issued.expires_at)})
    await _send_json(responder, 200, body.encode())
