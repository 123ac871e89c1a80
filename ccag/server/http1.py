"""The HTTP/1.1 driver: h11 on a Trio stream, one request at a time.

Theory of operation: a :class:`~ccag.server.common.ConnectionReader` task reads
the socket while a response is under way (on a plain TCP connection; under
TLS for the life of the connection), and the driver loop reads the next
request itself (see ConnectionReader.pause). The driver loop waits for the first
byte of a request (keep-alive timeout), reads the head and the whole body
(request timeout, header and body limits), then runs the handler inside a
cancel scope that the reader cancels when the client goes away. Bytes of a
pipelined next request stay in the reader's bounded buffer until the response
is done. Any response we cannot finish cleanly ends the connection.
"""

from __future__ import annotations

import logging
import socket
import struct
from http import HTTPStatus

import attrs
import h11
import trio

from ccag.config import Config
from ccag.errors import AbortConnection, ApiError, ClientDisconnected, InternalError
from ccag.server.common import (
    ConnectionReader,
    decode_headers,
    error_response,
    linger_and_close,
    log_access,
    new_request_id,
    peer_address,
    report_refusal,
)
from ccag.server.fastio import lean_stream
from ccag.server.types import Handler, Request, Responder
from ccag.server.upgrade import TakenOverStream, replayed_head

logger = logging.getLogger("ccag.server")

_HTTP_VERSION = "1.1"

# Reason phrases are optional (RFC 9112 4) but some tools print them.
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}

# How often, per write_timeout, an idle connection's write watchdog wakes to
# look for a write that started meanwhile; a stuck write is thus noticed
# between 1 and 1 + 1/_WRITE_CHECKS_PER_TIMEOUT write timeouts after it began.
_WRITE_CHECKS_PER_TIMEOUT = 4

# What h11 puts in a response head whose body it frames as chunks (it
# title-cases names and accepts no other transfer coding).
_CHUNKED_HEAD_LINE = b"\r\ntransfer-encoding: chunked\r\n"


class _ReadFailed(Exception):
    """Reading the request ended in an error response and a closed connection."""

    def __init__(self, error: ApiError, request: Request | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        # The request's head (empty body), when it was read before the refusal.
        self.request = request


class Http1Connection:
    """Serves one HTTP/1.1 connection until it closes, idles out or drains.

    Args:
        stream: the connection (plain or TLS).
        handler: the application.
        config: the server settings (limits and timeouts are read from it).
        initial: bytes already read from the stream (protocol sniffing).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: Config,
        initial: bytes = b"",
    ) -> None:
        self._stream = stream
        # Writes skip SocketStream's per-call round trips (ccag.server.fastio).
        self._send_all = lean_stream(stream).send_all
        self._handler = handler
        self._max_header_bytes: int = config.max_header_bytes
        self._max_body_bytes: int = config.max_body_bytes
        self._request_timeout: float = config.request_timeout
        self._keepalive_timeout: float = config.keepalive_timeout
        self._write_timeout: float = config.write_timeout
        self._write_failed = False
        self._write_started_at: float | None = None
        self._write_timed_out = False
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._max_header_bytes
        )
        self._reader = ConnectionReader(stream, self._on_peer_closed)
        self._reader.prepend(initial)
        self._client = peer_address(stream)
        self._handler_scope: trio.CancelScope | None = None
        self._idle_scope: trio.CancelScope | None = None
        self._request_event: h11.Request | None = None
        self._is_taken_over = False
        self.is_draining = False

    def start_draining(self) -> None:
        """Finish the response under way, if any, then close."""
        self.is_draining = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()
        if self._is_taken_over and self._handler_scope is not None:
            # A taken-over connection (a WebSocket) has no response to finish.
            self._handler_scope.cancel()

    def _on_peer_closed(self) -> None:
        if self._handler_scope is not None:
            self._handler_scope.cancel()

    async def run(self) -> None:
        """Serve requests until the connection is done, then close it."""
        linger = False
        async with trio.open_nursery() as nursery:
            if self._reader.can_pause:
                # This task reads requests itself; the reader reads during
                # responses only (see ConnectionReader).
                self._reader.pause()
            nursery.start_soon(self._reader.run)
            nursery.start_soon(self._watch_writes)
            try:
                linger = await self._serve_requests()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                linger = False
            finally:
                if not linger:
                    nursery.cancel_scope.cancel()
                    await trio.aclose_forcefully(self._stream)
            if linger:
                # The reader keeps running so the linger can drain the socket.
                await linger_and_close(self._stream, self._reader)
                nursery.cancel_scope.cancel()

    # Request cycle

    async def _serve_requests(self) -> bool:
        """Returns True when the connection should close gently (error sent)."""
        conn = self._conn
        while True:
            if not await self._wait_for_request():
                return False

            request_id = new_request_id()
            started_at = trio.current_time()
            try:
                request: Request | None = None
                with trio.move_on_after(self._request_timeout):
                    request = await self._read_request(request_id, started_at)
                    if request is None:
                        return False
            except _ReadFailed as failure:
                logger.debug(
                    "request %s refused: %s", request_id, failure.error.message
                )
                await self._send_error(failure.error, request_id)
                head = failure.request
                if head is None or not report_refusal(self._handler, head, failure.error):
                    log_access(
                        request_id,
                        head.method if head is not None else "-",
                        head.path if head is not None else "-",
                        failure.error.status,
                        started_at,
                    )
                return True
            if request is None:
                logger.debug(
                    "request %s did not arrive within %ss",
                    request_id,
                    self._request_timeout,
                )
                await self._send_error(
                    ApiError(408, "The request did not arrive in time."), request_id
                )
                log_access(request_id, "-", "-", 408, started_at)
                return True

            reader = self._reader
            if reader.can_pause:
                reader.resume()
            if await self._respond(request):
                return False
            if reader.can_pause:
                reader.pause()
            if "transfer-encoding" in request.headers and "content-length" in request.headers:
                # Both framings at once is how request smuggling starts: the
                # body was read as chunked, and the connection must not carry
                # another request (RFC 9112 6.1).
                return False
            if (
                conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and not self.is_draining
            ):
                conn.start_next_cycle()
                continue
            return False

    async def _wait_for_request(self) -> bool:
        """Wait (keep-alive timeout) for the first byte of the next request."""
        reader = self._reader
        if reader.has_data or self._conn.trailing_data[0]:
            return True
        if self.is_draining or reader.is_closed:
            return False
        with trio.move_on_after(self._keepalive_timeout) as scope:
            self._idle_scope = scope
            await reader.wait()
        self._idle_scope = None
        return reader.has_data and not self.is_draining

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        conn = self._conn
        reader = self._reader
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                message = _protocol_error_message(status, str(exc))
                raise _ReadFailed(
                    ApiError(status, message, "invalid_request_error")
                ) from None
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            await reader.wait()
            conn.receive_data(reader.take())

    async def _read_request(self, request_id: str, started_at: float) -> Request | None:
        """Read one whole request; None when the client closed between requests."""
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 guarantees it
            raise InternalError(f"unexpected h11 event {event!r}")

        if event.http_version not in (b"1.1", b"1.0"):
            # h11 parses any HTTP/x.y; a mangled HTTP/2 preface lands here too.
            raise _ReadFailed(
                ApiError(
                    505,
                    "Only HTTP/1.0, HTTP/1.1 and HTTP/2 are served.",
                    "invalid_request_error",
                )
            )

        head_size = len(event.target) + sum(
            len(name) + len(value) + 4 for name, value in event.headers
        )
        if head_size > self._max_header_bytes:
            raise _ReadFailed(
                ApiError(
                    431, "The request headers are too large.", "invalid_request_error"
                )
            )
        headers = decode_headers(event.headers)
        self._request_event = event

        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        head = Request(
            method=event.method.decode("ascii"),
            target=target,
            path=path,
            query=query,
            headers=headers,
            body=b"",
            http_version=_HTTP_VERSION,
            client=self._client,
            started_at=started_at,
            request_id=request_id,
        )

        # Refuse an oversized body before asking for it (RFC 9110 10.1.1).
        declared = headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > self._max_body_bytes
        ):
            raise _ReadFailed(_body_too_large(self._max_body_bytes), head)
        conn = self._conn
        if conn.they_are_waiting_for_100_continue:
            await self._write(
                conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            )

        try:
            body = await self._read_body()
        except _ReadFailed as failure:
            failure.request = head
            raise
        return attrs.evolve(head, body=body)

    async def _read_body(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body_bytes:
                    raise _ReadFailed(_body_too_large(self._max_body_bytes))
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return parts[0] if len(parts) == 1 else b"".join(parts)
            elif isinstance(
                event, h11.ConnectionClosed
            ):  # pragma: no cover - h11 raises first
                raise trio.BrokenResourceError("client closed mid-body")

    async def _respond(self, request: Request) -> bool:
        """Run the handler; True when the connection must close without more."""
        responder = Http1Responder(self, request.request_id, request.method == "HEAD")
        failure: BaseException | None = None
        with trio.CancelScope() as scope:
            self._handler_scope = scope
            if self._reader.is_closed:
                scope.cancel()
            try:
                await self._handler(request, responder)
            except ClientDisconnected:
                scope.cancel()
            except AbortConnection:
                self._reset_on_close()
                return True
            except Exception as exc:  # noqa: BLE001 - any handler failure becomes a 500 or a reset
                failure = exc
            finally:
                self._handler_scope = None

        if scope.cancelled_caught or self._reader.is_closed:
            logger.debug("request %s: client went away", request.request_id)
            return True
        if self._is_taken_over:
            return True

        if failure is not None:
            return await self._recover_from(failure, request, responder)
        if not responder.is_started:
            return await self._recover_from(
                InternalError("handler returned without a response"), request, responder
            )
        try:
            await responder.end_response()
        except ClientDisconnected:
            return True
        return False

    def _reset_on_close(self) -> None:
        """Make the coming close send a TCP reset instead of a FIN."""
        stream = self._stream
        sock = getattr(stream, "socket", None) or getattr(
            getattr(stream, "transport_stream", None), "socket", None
        )
        if sock is not None and sock.fileno() != -1:
            # SO_LINGER on with a zero timeout: close() discards unsent data
            # and resets the connection.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def _recover_from(
        self, failure: BaseException, request: Request, responder: Http1Responder
    ) -> bool:
        if responder.is_started:
            logger.error(
                "request %s: handler failed after the response started",
                request.request_id,
                exc_info=failure,
            )
            return True
        if isinstance(failure, ApiError):
            error = failure
        else:
            logger.error(
                "request %s: handler failed", request.request_id, exc_info=failure
            )
            error = ApiError(500, "Internal server error.", "api_error")
        headers, body = error_response(error, request.request_id)
        try:
            await responder.start_response(error.status, headers)
            await responder.send_data(body)
            await responder.end_response()
        except ClientDisconnected:
            return True
        return False

    # Writing

    async def _write(self, data: bytes | None) -> None:
        if not data:
            return
        if self._reader.is_closed or self._write_failed:
            raise ClientDisconnected("the client closed the connection")
        # No cancel scope here: a stream writes once per event, and a scope
        # per write cost more than the rest of the write. _watch_writes
        # enforces the write timeout instead.
        self._write_started_at = trio.current_time()
        try:
            await self._send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._write_failed = True
            if self._write_timed_out:
                raise ClientDisconnected(
                    f"the client read nothing for {self._write_timeout}s"
                ) from exc
            raise ClientDisconnected("the client closed the connection") from exc
        finally:
            self._write_started_at = None

    async def _watch_writes(self) -> None:
        """Close the connection when one write has been stuck for write_timeout.

        A client that reads nothing would otherwise hold its handler forever.
        Closing the stream wakes the blocked ``send_all`` with an error, which
        ``_write`` turns into ``ClientDisconnected``.
        """
        timeout = self._write_timeout
        check_every = timeout / _WRITE_CHECKS_PER_TIMEOUT
        while True:
            started = self._write_started_at
            if started is None:
                await trio.sleep(check_every)
                continue
            if trio.current_time() - started < timeout:
                await trio.sleep_until(started + timeout)
                continue
            self._write_timed_out = True
            logger.debug("client read nothing for %ss; closing", timeout)
            await trio.aclose_forcefully(self._stream)
            return

    async def _send_error(self, error: ApiError, request_id: str) -> None:
        """Send a final error response if the exchange still allows one."""
        conn = self._conn
        if (
            conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE)
            or self._reader.is_closed
        ):
            return
        headers, body = error_response(error, request_id)
        raw = [(b"request-id", request_id.encode()), (b"connection", b"close")]
        raw.extend(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
        )
        try:
            data = conn.send(
                h11.Response(
                    status_code=error.status,
                    headers=raw,
                    reason=_REASONS.get(error.status, b""),
                )
            )
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data += conn.send(h11.EndOfMessage()) or b""
            await self._write(data)
        except (ClientDisconnected, h11.LocalProtocolError) as exc:
            logger.debug("request %s: error response not sent: %s", request_id, exc)


class Http1Responder(Responder):
    """The :class:`~ccag.server.types.Responder` of one HTTP/1.1 exchange."""

    __slots__ = (
        "_conn",
        "_connection",
        "_ended",
        "_head",
        "_is_chunked",
        "_is_head",
        "_request_id",
        "_started",
    )

    def __init__(
        self, connection: Http1Connection, request_id: str, is_head: bool
    ) -> None:
        self._connection = connection
        self._conn = connection._conn
        self._request_id = request_id
        self._is_head = is_head
        self._started = False
        self._ended = False
        self._head = b""
        self._is_chunked = False
        self._flushed = False

    @property
    def is_started(self) -> bool:
        return self._started

    @property
    def body_flushed(self) -> bool:
        """The last ``send_data``'s bytes are all with the kernel."""
        return self._flushed

    def take_over(self) -> TakenOverStream:
        """The raw connection, for a handler that switches protocols.

        See :mod:`ccag.server.upgrade`. The stream replays the request head
        first. Call it instead of ``start_response``; the connection closes
        when the handler returns, and a drain cancels the handler at once.

        Raises:
            InternalError: the response has started.
        """
        connection = self._connection
        if self._started or connection._request_event is None:
            raise InternalError("take_over after the response started")
        connection._is_taken_over = True
        replay = replayed_head(connection._request_event) + self._conn.trailing_data[0]
        return TakenOverStream(
            connection._reader, replay, connection._write, connection._stream
        )

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Queue the head; it is written with the first body bytes or the end."""
        if self._started:
            raise InternalError("start_response called twice")
        raw = [(b"request-id", self._request_id.encode())]
        raw.extend(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
        )
        if self._connection.is_draining:
            raw.append((b"connection", b"close"))
        head = self._conn.send(
            h11.Response(
                status_code=status, headers=raw, reason=_REASONS.get(status, b"")
            )
        )
        self._started = True
        # The head waits for the first body bytes so both go out in one write.
        self._head = head or b""
        self._is_chunked = _CHUNKED_HEAD_LINE in self._head.lower()
        # Nothing was written, so no yield here: under load every yield on the
        # way to the first byte waits behind all other ready tasks. The write
        # that follows is the schedule point.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def send_data(self, data: bytes) -> None:
        if not self._started or self._ended:
            raise InternalError("send_data outside a started, unfinished response")
        if self._is_head or not data:
            # A HEAD response has no body (RFC 9110 9.3.2); still report a gone client.
            if self._connection._reader.is_closed:
                raise ClientDisconnected("the client closed the connection")
            return
        if self._is_chunked:
            # h11's chunked writer keeps no state, so framing the chunk here
            # (the same bytes) spares an h11 event and its checks per write;
            # h11 still writes the final chunk in end_response.
            framed = b"".join((self._head, b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            framed = self._head + (self._conn.send(h11.Data(data=data)) or b"")
        self._flushed = False
        await self._connection._write(framed)
        self._flushed = True
        # Cleared only once written: a write cancelled before its first byte
        # (a stream ended by its idle timeout) must not lose the head.
        self._head = b""

    async def end_response(self) -> None:
        if self._ended:
            return
        if not self._started:
            raise InternalError("end_response before start_response")
        self._ended = True
        ending = self._conn.send(h11.EndOfMessage()) or b""
        if self._head:
            ending, self._head = self._head + ending, b""
        await self._connection._write(ending)


def _body_too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"Request body exceeds the limit of {limit} bytes.", "request_too_large"
    )


def _protocol_error_message(status: int, detail: str) -> str:
    if status == 431:
        return "The request headers are too large."
    return f"Malformed HTTP request: {detail}"
