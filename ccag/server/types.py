"""What the inbound shell hands to a request handler, and what it expects back.

A handler is ``async def handler(request: Request, responder: Responder)``.
The shell has read the whole request body before calling it (bounded by the
body limit), runs it inside a cancel scope that is cancelled when the client
goes away, and turns anything the handler did not finish into a clean end of
the exchange: an exception before ``start_response`` becomes a 500 in
Anthropic's error shape, an exception after it ends the stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs


@attrs.frozen
class Headers:
    """Request headers as (lower-case name, value) pairs, in arrival order."""

    items: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (lower case), or ``default``."""
        for key, value in self.items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.items if key == name]

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self.items)


@attrs.frozen
class Request:
    """One complete HTTP request.

    Attributes:
        method: upper-case method, such as ``POST``.
        target: the request target as sent, path and query.
        path: the target's path, percent-encoding left as sent.
        query: the part after ``?``, or ``""``.
        headers: the request headers.
        body: the whole body.
        http_version: ``"1.1"`` or ``"2"``.
        client: the peer's (host, port), when known.
        started_at: ``trio.current_time()`` when the first byte of the request
            arrived; durations are measured from here.
        request_id: an id unique to this request, echoed as ``request-id``.
    """

    method: str
    target: str
    path: str
    query: str
    headers: Headers
    body: bytes
    http_version: str
    client: tuple[str, int] | None
    started_at: float
    request_id: str


class Responder(Protocol):
    """How a handler answers. One response per request.

    ``send_data`` waits until the bytes are handed to the transport (HTTP/1.1)
    or fit the flow-control window (HTTP/2): that wait is the back-pressure a
    slow client puts on the handler. It raises
    :class:`ccag.errors.ClientDisconnected` when the client is gone.
    """

    @property
    def is_started(self) -> bool:
        """True once ``start_response`` was called."""
        ...

    @property
    def body_flushed(self) -> bool:
        """True once the bytes of the last ``send_data`` are all with the
        kernel, whichever task wrote them: a client that leaves after that
        has them (the route then does not count the answer as abandoned)."""
        ...

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the status and headers. ``content-length`` may be among them;
        otherwise HTTP/1.1 uses chunked encoding."""
        ...

    async def send_data(self, data: bytes) -> None:
        """Send part of the body."""
        ...

    async def end_response(self) -> None:
        """Finish the body. Calling it twice is harmless."""
        ...


def can_take_over(responder: Responder) -> bool:
    """Whether ``responder`` can hand over the raw connection.

    HTTP/1.1 responders have ``take_over()`` (see :mod:`ccag.server.upgrade`),
    which a handler calls instead of ``start_response`` to speak another
    protocol (a WebSocket) on the connection. HTTP/2 ones do not: RFC 8441
    WebSockets over HTTP/2 are not served.
    """
    return callable(getattr(responder, "take_over", None))


Handler = Callable[[Request, Responder], Awaitable[None]]
