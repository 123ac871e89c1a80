"""Pieces both HTTP drivers share: ids, error responses, the connection reader.

The reader is the one task per connection that calls ``receive_some``. It runs
for the whole life of the connection, so a client that closes or resets while
its request is being handled is noticed at once (the driver then cancels the
handler), and bytes a client sends early (a pipelined request, HTTP/2 frames)
wait in a bounded buffer until the driver asks for them.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable

import trio

from ccag.errors import ApiError
from ccag.server.types import Handler, Headers, Request

logger = logging.getLogger("ccag.server")

# The same logger and line format as the application's access log
# (ccag/api/router.py), so that requests the shell answers itself show up too.
access_log = logging.getLogger("ccag.access")

# Longest path written to an access line; a hostile path must not flood logs.
_ACCESS_PATH_CHARS = 200


def log_access(
    request_id: str, method: str, path: str, status: int, started_at: float
) -> None:
    """Write one access line: request id, method, path, status, duration.

    The router writes it for every route but the model route (whose line
    carries model and tokens); the shell writes it for what never reaches a
    handler: malformed requests (400), oversized heads and bodies (431, 413)
    and slow requests (408). ``method`` and ``path`` are ``-`` when the
    request line could not be read.
    """
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s %d %.1fms",
            request_id,
            method or "-",
            path[:_ACCESS_PATH_CHARS] or "-",
            status,
            (trio.current_time() - started_at) * 1000.0,
        )

# One read asks for this much: large enough that a 76 KB Claude Code body
# arrives in two reads, small enough to bound what one read may allocate.
READ_SIZE = 64 * 1024

# How much the reader buffers before it stops reading and lets TCP push back
# on the client: a pipelined request or a burst of HTTP/2 frames fits, an
# endless stream of garbage does not grow memory.
MAX_BUFFERED_BYTES = 4 * READ_SIZE

# After an error response on a connection we are about to close, unread bytes
# from the client would turn our close into a reset that can destroy the
# response before the client reads it. We read and drop this much, for at
# most this long, before closing anyway.
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 1.0

JSON_CONTENT_TYPE = ("content-type", "application/json")


def new_request_id() -> str:
    """A fresh id in the shape of Anthropic's (``req_`` and 24 hex digits)."""
    return "req_" + os.urandom(12).hex()


def error_response(
    error: ApiError, request_id: str
) -> tuple[list[tuple[str, str]], bytes]:
    """The headers (without ``request-id``) and body of a plain error response."""
    body = error.body(request_id)
    headers = [JSON_CONTENT_TYPE, ("content-length", str(len(body)))]
    headers.extend(error.headers)
    return headers, body


def report_refusal(handler: Handler, request: Request, error: ApiError) -> bool:
    """Tell the application about a request the shell answered itself.

    The shell refuses some requests before any handler runs (a body over the
    limit: 413). A handler object with a ``refused(request, error)`` method
    learns of them, so that what it counts (``ccag.requests.total`` counts
    every ``/v1/messages`` request) includes these. ``request.body`` is empty:
    it was not read.

    Returns:
        True when the handler took the report (it then writes the access
        line); False when the shell should log the response itself.
    """
    refused = getattr(handler, "refused", None)
    if refused is None:
        return False
    try:
        refused(request, error)
    except Exception:  # an observer's bug must not break the connection
        logger.exception("request %s: reporting the refusal failed", request.request_id)
        return False
    return True


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Header pairs from the wire as text; latin-1 never fails and loses nothing."""
    return Headers(
        tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in raw
        )
    )


def peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The client's (host, port), when the stream sits on a socket."""
    inner: object = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            address = inner.socket.getpeername()
        except OSError:
            return None
        return (str(address[0]), int(address[1]))
    return None


class ConnectionReader:
    """Reads a stream in the background into a bounded buffer.

    Args:
        stream: the connection.
        on_closed: called once, when the peer closes or the read fails.
    """

    def __init__(self, stream: trio.abc.Stream, on_closed: Callable[[], None]) -> None:
        self._stream = stream
        self._on_closed = on_closed
        self._buffer = bytearray()
        self._arrived = trio.Event()
        self._drained = trio.Event()
        self.is_closed = False

    def prepend(self, data: bytes) -> None:
        """Put bytes read before the reader started in front of the buffer."""
        self._buffer[:0] = data
        if data:
            self._arrived.set()

    @property
    def has_data(self) -> bool:
        return bool(self._buffer)

    async def run(self) -> None:
        """Read until the peer closes; run this in the connection's nursery."""
        stream = self._stream
        buffer = self._buffer
        while True:
            if len(buffer) >= MAX_BUFFERED_BYTES:
                self._drained = trio.Event()
                await self._drained.wait()
                continue

            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            except OSError as exc:  # pragma: no cover - the socket broke oddly
                logger.debug("connection read failed: %s", exc)
                data = b""

            if not data:
                self.is_closed = True
                self._arrived.set()
                self._on_closed()
                return
            buffer += data
            self._arrived.set()

    def take(self) -> bytes:
        """Everything buffered so far (possibly nothing)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._drained.set()
        return data

    async def wait(self) -> None:
        """Wait until there is data or the peer has closed."""
        if self._buffer or self.is_closed:
            return
        self._arrived = trio.Event()
        await self._arrived.wait()


async def linger_and_close(
    stream: trio.abc.Stream, reader: ConnectionReader | None
) -> None:
    """Close after a final response so unread client bytes cannot reset it."""
    try:
        with trio.move_on_after(LINGER_SECONDS):
            send_eof = getattr(stream, "send_eof", None)
            if send_eof is not None and not isinstance(stream, trio.SSLStream):
                await send_eof()
            if reader is not None:
                discarded = 0
                while not reader.is_closed and discarded < LINGER_BYTES:
                    await reader.wait()
                    discarded += len(reader.take())
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    await trio.aclose_forcefully(stream)


def is_accept_exhaustion(exc: OSError) -> bool:
    """Accept failed for lack of resources: wait and retry, do not stop serving."""
    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
