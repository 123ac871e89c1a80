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

from ccag.errors import ApiError, InternalError
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

    On a plain TCP connection the owner may :meth:`pause` the background
    reads: :meth:`wait` then reads the socket itself. The HTTP/1.1 driver
    does that between responses, so a new request is read by the task that
    serves it, in the same scheduler pass as its arrival, rather than being
    handed over from this task one pass later (under load a pass is a
    fraction of a millisecond of other streams' work, all of it added to the
    request's time to first byte).

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
        # Raw reads are possible on a plain TCP stream only (TLS has state).
        self._socket = stream.socket if type(stream) is trio.SocketStream else None
        self._paused = False
        self._resumed = trio.Event()
        self._read_scope: trio.CancelScope | None = None

    @property
    def can_pause(self) -> bool:
        return self._socket is not None

    def pause(self) -> None:
        """Stop reading in the background; :meth:`wait` reads until :meth:`resume`.

        A background read parked in the socket wait is cancelled at once (its
        registration is dropped before this returns); one that already saw
        the socket readable leaves the bytes for :meth:`wait` to read.
        """
        if self._socket is None:
            raise InternalError("only a plain TCP connection's reader can pause")
        self._paused = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    def resume(self) -> None:
        """Read in the background again (to notice a client going away)."""
        if self._paused:
            self._paused = False
            self._resumed.set()

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
        buffer = self._buffer
        while True:
            if self._paused:
                self._resumed = trio.Event()
                await self._resumed.wait()
                continue
            if len(buffer) >= MAX_BUFFERED_BYTES:
                self._drained = trio.Event()
                await self._drained.wait()
                continue

            data = await self._receive_in_background()
            if data is None:
                continue
            if not data:
                self._close()
                return
            buffer += data
            self._arrived.set()

    async def _receive_in_background(self) -> bytes | None:
        """Bytes, ``b""`` at EOF or failure, None if paused meanwhile."""
        if self._socket is None:
            try:
                return bytes(await self._stream.receive_some(READ_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            except OSError as exc:  # pragma: no cover - the socket broke oddly
                logger.debug("connection read failed: %s", exc)
                return b""

        with trio.CancelScope() as scope:
            self._read_scope = scope
            try:
                await _wait_readable(self._socket)
            except (trio.ClosedResourceError, OSError):
                return b""
            finally:
                self._read_scope = None
        if scope.cancelled_caught or self._paused:
            return None
        return self._read_now()

    def _read_now(self) -> bytes | None:
        """One read that does not wait: None if nothing is there after all."""
        assert self._socket is not None
        try:
            return os.read(self._socket.fileno(), READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            logger.debug("connection read failed: %s", exc)
            return b""

    def _close(self) -> None:
        self.is_closed = True
        self._arrived.set()
        self._on_closed()

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
        if self._paused:
            await self._read_directly()
            return
        self._arrived = trio.Event()
        await self._arrived.wait()

    async def _read_directly(self) -> None:
        assert self._socket is not None
        while True:
            try:
                await _wait_readable(self._socket)
            except (trio.ClosedResourceError, OSError):
                data: bytes | None = b""
            else:
                data = self._read_now()
            if data is None:
                continue
            if not data:
                self._close()
                return
            self._buffer += data
            return


async def _wait_readable(sock: trio.socket.SocketType) -> None:
    # A socket the connection closed meanwhile has no number any more, which
    # trio's wait refuses with ValueError; to a reader that is a closed stream.
    if sock.fileno() == -1:
        raise trio.ClosedResourceError("the socket was closed")
    await trio.lowlevel.wait_readable(sock)


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
