"""``GET /ui/ws``: the live view's WebSocket.

Protocol (JSON text messages):

1. The client opens ``/ui/ws`` over HTTP/1.1 and, once accepted, sends
   ``{"type": "hello", "token": ..., "epoch": ..., "last_seq": ...}``: an
   admin session token, a member session token or an API key (never in the
   URL, so never in a log), and, when it reconnects, the hub epoch and the
   last sequence number it saw. A client that sent ``Authorization: Bearer``
   with the handshake may leave out the token.
2. No valid credential within :data:`HELLO_TIMEOUT_SECONDS`: the server
   closes with 1008 (policy violation) and a reason.
3. Otherwise the server sends ``welcome`` (who the viewer is), then either
   ``resumed`` followed by the missed ``event`` messages, or a ``snapshot``
   (recent events and the per-second history), then live: an ``event`` per
   finished request the viewer may see, a ``second`` every second (the
   rollups charts draw), a ``spend`` report every few seconds. A viewer that
   cannot keep up gets ``lagging`` and then only ``second`` and ``spend``
   messages, until ``caught_up`` and a new ``snapshot``.
4. Credentials are checked again every :data:`RECHECK_SECONDS`; a logged-out
   session or revoked key ends the socket with 1008.

The handshake itself is trio-websocket's: the HTTP/1.1 driver hands over the
connection with the request head replayed (see :mod:`ccag.server.upgrade`),
and :func:`trio_websocket.wrap_server_stream` reads it as it would from a
fresh socket.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket

from ccag.api.responses import send_error
from ccag.errors import ApiError
from ccag.liveview.events import Visibility
from ccag.liveview.hub import LiveHub, dumps
from ccag.liveview.spend import SpendView
from ccag.server.types import Headers, Request, Responder, can_take_over

logger = logging.getLogger("ccag.liveview")
access_log = logging.getLogger("ccag.access")

# RFC 6455 7.4.1: 1008 is "policy violation", the close code for a refusal.
POLICY_VIOLATION = 1008
# 1001 "going away": the server is shutting down.
GOING_AWAY = 1001
# A close reason must fit a control frame: 125 bytes less the 2-byte code.
MAX_CLOSE_REASON_BYTES = 123

# Time for the opening handshake and for the hello after it: a page sends
# both at once, so seconds are plenty; a silent socket must not linger.
HANDSHAKE_TIMEOUT_SECONDS = 10.0
HELLO_TIMEOUT_SECONDS = 10.0
# How long a close handshake may take before the connection is just dropped.
CLOSE_TIMEOUT_SECONDS = 2.0
# What a client may send in one message: a hello is well under 1 KB.
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024
# A second is closed this long after it ends, so a timer that fires a hair
# early does not find the second still open.
TICK_DELAY_SECONDS = 0.01
# How often spend is pushed, and credentials re-checked.
SPEND_PUSH_SECONDS = 5.0
RECHECK_SECONDS = 30.0
# The kernel send buffer of a viewer's socket. Without a cap the kernel
# grows it to megabytes, holding a slow viewer minutes behind before its
# queue fills and it is switched to summaries.
VIEWER_SEND_BUFFER_BYTES = 64 * 1024

Authenticate = Callable[[Headers, float], Awaitable[Any]]


class _Refused(Exception):
    """The viewer is closed with 1008 and this reason."""


def is_websocket_upgrade(request: Request) -> bool:
    """Whether ``request`` asks to switch to WebSocket (RFC 6455 4.2.1)."""
    upgrade = (request.headers.get("upgrade") or "").lower()
    connection = (request.headers.get("connection") or "").lower()
    return (
        request.method == "GET"
        and upgrade == "websocket"
        and "upgrade" in [token.strip() for token in connection.split(",")]
        and "sec-websocket-key" in request.headers
    )


class LiveSocket:
    """The ``/ui/ws`` handler.

    Args:
        hub: the event hub.
        spend: spend reports.
        authenticate: ``authenticate(headers, now)`` returns the principal of
            an admin or member credential or raises a 401
            :class:`~ccag.errors.ApiError` (SessionManager.authenticate).
        wall_clock: Unix time, for credential expiry.
    """

    # The router hands a route with this flag the server's own responder
    # (which can take the connection over) and leaves the access line to it.
    logs_access = True

    def __init__(
        self,
        hub: LiveHub,
        spend: SpendView,
        authenticate: Authenticate,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._hub = hub
        self._spend = spend
        self._authenticate = authenticate
        self._wall_clock = wall_clock

    async def __call__(self, request: Request, responder: Responder) -> None:
        if not is_websocket_upgrade(request) or not can_take_over(responder):
            await send_error(
                request,
                responder,
                ApiError(
                    426,
                    "this is the live view's WebSocket: connect with an HTTP/1.1 "
                    "WebSocket upgrade",
                    "invalid_request_error",
                    [("upgrade", "websocket"), ("connection", "upgrade")],
                ),
            )
            return

        stream = responder.take_over()  # type: ignore[attr-defined]
        _limit_send_buffer(stream)
        # What the client got: the access line must not claim a 101 that was
        # never sent, nor hide a 1008 refusal behind it.
        status = ["- handshake not completed"]
        try:
            await self._upgrade(stream, request, status)
        finally:
            access_log.info(
                "%s GET /ui/ws %s websocket %.1fs",
                request.request_id,
                status[0],
                trio.current_time() - request.started_at,
            )

    async def _upgrade(self, stream: Any, request: Request, status: list[str]) -> None:
        """Accept the WebSocket and serve it; ``status[0]`` says how it went."""
        websocket: trio_websocket.WebSocketConnection | None = None
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(HANDSHAKE_TIMEOUT_SECONDS):
                handshake = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=MAX_CLIENT_MESSAGE_BYTES
                )
                websocket = await handshake.accept()
            if websocket is None or websocket.closed:
                nursery.cancel_scope.cancel()
                return
            status[0] = "101"
            try:
                await self._serve(websocket, request)
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT_SECONDS) as scope:
                    scope.shield = True
                    await websocket.aclose()
                closed = websocket.closed
                if closed is not None:
                    status[0] = f"101 closed {closed.code}"
                nursery.cancel_scope.cancel()

    async def _serve(self, websocket: trio_websocket.WebSocketConnection,
                     request: Request) -> None:
        try:
            hello, principal = await self._hello(websocket, request)
        except _Refused as refusal:
            reason = str(refusal).encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                await websocket.aclose(POLICY_VIOLATION, reason)
            return
        except trio_websocket.ConnectionClosed:
            return

        visibility = Visibility(
            is_admin=principal.is_admin, user=principal.user, key_id=principal.key_id
        )
        hub = self._hub
        try:
            await websocket.send_message(
                dumps(
                    {
                        "type": "welcome",
                        "epoch": hub.epoch,
                        "seq": hub.last_seq,
                        "name": principal.user or principal.key_name or principal.team,
                        "role": principal.role,
                        "scope": visibility.scope,
                    }
                )
            )
        except trio_websocket.ConnectionClosed:
            return

        viewer = hub.open_viewer(visibility)
        try:
            hub.start(viewer, hello.get("epoch"), _int_or_none(hello.get("last_seq")))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, websocket, viewer, nursery.cancel_scope)
                nursery.start_soon(self._receive_loop, websocket, nursery.cancel_scope)
                nursery.start_soon(self._spend_loop, viewer)
                nursery.start_soon(self._clock_loop)
                nursery.start_soon(
                    self._recheck_loop, websocket, hello, request, nursery.cancel_scope
                )
        finally:
            hub.close_viewer(viewer)

    async def _hello(
        self, websocket: trio_websocket.WebSocketConnection, request: Request
    ) -> tuple[dict[str, Any], Any]:
        hello: dict[str, Any] | None = None
        with trio.move_on_after(HELLO_TIMEOUT_SECONDS):
            message = await websocket.get_message()
            try:
                document = json.loads(message)
            except (ValueError, TypeError):
                document = None
            if isinstance(document, dict) and document.get("type") == "hello":
                hello = document
        if hello is None:
            raise _Refused("send a hello message with a token first")
        principal = await self._principal(hello, request)
        return hello, principal

    async def _principal(self, hello: dict[str, Any], request: Request) -> Any:
        token = hello.get("token")
        items = list(request.headers.items)
        if isinstance(token, str) and token:
            items = [("authorization", "Bearer " + token)]
        elif request.headers.get("authorization") is None:
            raise _Refused("a token is required: log in, or send an API key")
        try:
            principal = await self._authenticate(Headers(tuple(items)), self._wall_clock())
        except ApiError as error:
            raise _Refused(error.message) from None
        if not principal.is_admin and principal.user is None and principal.key_id is None:
            raise _Refused("this credential names no user or key to show")
        return principal

    async def _send_loop(self, websocket: trio_websocket.WebSocketConnection,
                         viewer: Any, done: trio.CancelScope) -> None:
        try:
            while True:
                message = await viewer.next_message(self._hub)
                await websocket.send_message(message)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            done.cancel()

    async def _receive_loop(self, websocket: trio_websocket.WebSocketConnection,
                            done: trio.CancelScope) -> None:
        # Nothing after the hello changes what is sent; reading keeps pings
        # answered and notices the close.
        try:
            while True:
                await websocket.get_message()
        except trio_websocket.ConnectionClosed:
            done.cancel()

    async def _clock_loop(self) -> None:
        # Every viewer drives the hub's clock; advancing is idempotent, so
        # several viewers close each second once.
        hub = self._hub
        while True:
            await trio.sleep(1.0 - hub.clock() % 1.0 + TICK_DELAY_SECONDS)
            hub.advance(hub.clock())

    async def _spend_loop(self, viewer: Any) -> None:
        while True:
            try:
                report = await self._spend.report(viewer.visibility)
            except Exception:  # a store hiccup costs one report, not the socket
                logger.warning("live view: spend report failed", exc_info=True)
            else:
                viewer.offer(dumps(report))
            await trio.sleep(SPEND_PUSH_SECONDS)

    async def _recheck_loop(self, websocket: trio_websocket.WebSocketConnection,
                            hello: dict[str, Any], request: Request,
                            done: trio.CancelScope) -> None:
        while True:
            await trio.sleep(RECHECK_SECONDS)
            try:
                await self._principal(hello, request)
            except _Refused as refusal:
                reason = str(refusal).encode()[:MAX_CLOSE_REASON_BYTES]
                with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await websocket.aclose(POLICY_VIOLATION, reason.decode("utf-8", "ignore"))
                done.cancel()
                return


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _limit_send_buffer(stream: Any) -> None:
    socket_stream = getattr(stream, "socket_stream", None)
    if socket_stream is None:
        return
    try:
        socket_stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIEWER_SEND_BUFFER_BYTES)
    except OSError:  # pragma: no cover - an odd socket keeps the kernel default
        pass
