"""``GET /metrics``: the Prometheus exposition, for admins only.

Operators scrape with ``Authorization: Bearer <token>``: an admin session
token or an API key whose owner has the admin role. A refusal is answered
in Anthropic's error shape and counted in ``ccag.auth_failures.total``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ccag.errors import ApiError
from ccag.server.types import Headers, Request, Responder
from ccag.telemetry import Telemetry

AuthorizeAdmin = Callable[[Headers, float], Any | Awaitable[Any]]


async def metrics_handler(
    request: Request,
    responder: Responder,
    *,
    telemetry: Telemetry,
    authorize_admin: AuthorizeAdmin,
    wall_clock: Callable[[], float] = time.time,
) -> None:
    """Answer one ``GET /metrics``.

    Args:
        request: the request; only its headers are read.
        responder: where the answer goes.
        telemetry: the instruments to expose.
        authorize_admin: ``authorize_admin(headers, now)`` returns (or, if a
            coroutine function, resolves to) the admin principal, or raises
            an :class:`~ccag.errors.ApiError`; a 401/403 carries ``.reason``.
        wall_clock: seconds since the epoch, for session and key expiry.
    """
    try:
        outcome = authorize_admin(request.headers, wall_clock())
        if inspect.isawaitable(outcome):
            await outcome
    except ApiError as error:
        # Only refusals of credentials carry a reason; a store that is down
        # (503) is not an authentication failure.
        reason = getattr(error, "reason", None)
        if reason is not None:
            telemetry.auth_failure(reason)
        body = error.body(request.request_id)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *error.headers,
        ]
        await responder.start_response(error.status, headers)
        await responder.send_data(body)
        await responder.end_response()
        return

    # Rendering thousands of series takes tens of milliseconds: a worker
    # thread keeps that off the event loop that streams everyone's replies.
    # The recorder's reads are safe from another thread.
    body, content_type = await trio.to_thread.run_sync(telemetry.render_prometheus)
    await responder.start_response(
        200,
        [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        ],
    )
    if request.method != "HEAD":
        await responder.send_data(body)
    await responder.end_response()
