"""The HTTP/2 driver: h2 on a Trio stream, one task per stream.

Theory of operation: the connection task feeds what the
:class:`~ccag.server.common.ConnectionReader` buffered into the h2 state
machine and dispatches its events; each request stream gets a task that waits
for the whole body (request timeout), then runs the handler in a cancel scope
that a client RST_STREAM or a closed connection cancels.

Writes go through :meth:`Http2Connection.flush`, which holds the write lock
only while handing h2's pending bytes to the transport. A stream whose
flow-control window is closed waits for a window update *outside* that lock,
so a client that stops reading one stream never stalls the others. Received
body bytes are acknowledged as soon as they are buffered; the buffer itself is
bounded by the body limit.
"""

from __future__ import annotations

import logging

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack.exceptions
import trio
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame

from ccag.config import Config
from ccag.errors import AbortConnection, ApiError, ClientDisconnected, InternalError
from ccag.server.common import (
    ConnectionReader,
    decode_headers,
    error_response,
    new_request_id,
    peer_address,
    report_refusal,
)
from ccag.server.types import Handler, Headers, Request, Responder

logger = logging.getLogger("ccag.server")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_HTTP_VERSION = "2"

_SETTINGS_FRAME_TYPE = 0x4
_GOAWAY_FRAME_TYPE = 0x7

# A GOAWAY without debug data: the 9-byte frame header, last stream id, code.
_GOAWAY_SIZE = 9 + 8

# Per-stream receive window we advertise: a 76 KB Claude Code body fits in one
# window, so an upload needs no round trip for WINDOW_UPDATE. Memory stays
# bounded by the body limit, which applies whatever the window.
STREAM_WINDOW = 1024 * 1024

# Extra connection-level receive window, for the same reason across the
# concurrent count_tokens bursts Claude Code sends.
CONNECTION_WINDOW_BONUS = 4 * 1024 * 1024

# Connection-specific header fields are forbidden in HTTP/2 (RFC 9113 8.2.2);
# a handler written for HTTP/1.1 may still name them, so they are dropped.
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")
)


# What h2 is told the stream limit is, so that it never enforces the real one
# itself (see _StreamLimitedConnection): more than stream ids can number.
_NO_LIBRARY_STREAM_LIMIT = 2**31


class _AdvertisedSettings(h2.settings.Settings):
    """Our SETTINGS as sent, except that h2 reads no MAX_CONCURRENT_STREAMS.

    The configured value is still what the SETTINGS frame advertises;
    :class:`_StreamLimitedConnection` enforces it.
    """

    @property
    def max_concurrent_streams(self) -> int:
        return _NO_LIBRARY_STREAM_LIMIT

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class _StreamLimitedConnection(h2.connection.H2Connection):
    """h2's connection, refusing a stream over the limit with REFUSED_STREAM.

    RFC 9113 5.1.2 makes a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS a
    stream error, and REFUSED_STREAM tells the client it was not processed
    and may be retried. h2 instead ends the whole connection (GOAWAY), and
    has no hook for it, so the limit is checked here, in h2's handler of
    HEADERS, in frame order. A stream over the limit is admitted to h2 as
    any other (its header block decoded, which keeps the connection's HPACK
    state in step with the client's, and its id used up), reset at once,
    and its events dropped: the handler never sees it.

    Args:
        config: h2's configuration.
        stream_limit: how many streams the client may have open at once.
    """

    def __init__(self, config: h2.config.H2Configuration, stream_limit: int) -> None:
        super().__init__(config=config)
        self.stream_limit = stream_limit

    def _receive_headers_frame(
        self, frame: HeadersFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        if frame.stream_id in self.streams or self.open_inbound_streams < self.stream_limit:
            return super()._receive_headers_frame(frame)

        frames, events = super()._receive_headers_frame(frame)
        logger.debug(
            "h2 stream %d refused: the client has %d streams open",
            frame.stream_id,
            self.stream_limit,
        )
        self.reset_stream(frame.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        return frames, [
            event for event in events if getattr(event, "stream_id", None) != frame.stream_id
        ]


class _Stream:
    """What the connection knows about one request stream."""

    __slots__ = (
        "body_parts",
        "body_size",
        "completed",
        "is_complete",
        "is_reset",
        "raw_headers",
        "refusal",
        "request_id",
        "scope",
        "started_at",
        "stream_id",
    )

    def __init__(
        self, stream_id: int, raw_headers: list[tuple[bytes, bytes]], started_at: float
    ) -> None:
        self.stream_id = stream_id
        self.request_id = new_request_id()
        self.raw_headers = raw_headers
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.is_complete = False
        self.completed = trio.Event()
        self.is_reset = False
        # An error decided before the handler runs (413): the stream answers it.
        self.refusal: ApiError | None = None
        self.scope: trio.CancelScope | None = None
        self.started_at = started_at


class Http2Connection:
    """Serves one HTTP/2 connection until the client leaves, errs or we drain.

    Args:
        stream: the connection (plain or TLS).
        handler: the application.
        config: the server settings.
        initial: bytes already read from the stream (the sniffed preface).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: Config,
        initial: bytes = b"",
    ) -> None:
        self._stream = stream
        self._handler = handler
        self._max_body_bytes: int = config.max_body_bytes
        self._request_timeout: float = config.request_timeout
        self._keepalive_timeout: float = config.keepalive_timeout
        self._write_timeout: float = config.write_timeout
        self._client = peer_address(stream)

        h2_config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True
        )
        self._h2 = _StreamLimitedConnection(h2_config, config.h2_max_concurrent_streams)
        self._h2.local_settings = _AdvertisedSettings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.h2_max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )

        self._reader = ConnectionReader(stream, self._on_peer_closed)
        self._reader.prepend(initial)
        self._write_lock = trio.StrictFIFOLock()
        # Marks of queued and flushed frames (Http2Responder.body_flushed).
        self._queued_mark = 0
        self._flushed_mark = 0
        self._window_opened = trio.Event()
        self._streams: dict[int, _Stream] = {}
        self._nursery: trio.Nursery | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._is_broken = False
        self.is_draining = False
        self._goaway_sent = False
        # The highest stream we handed to the handler: a GOAWAY names it.
        self._last_processed_stream_id = 0
        # Bytes held until the frame after the preface shows its type.
        self._preface_head: bytes | None = b""

    # Connection lifecycle

    def start_draining(self) -> None:
        """Refuse new streams, let open ones finish, then GOAWAY and close.

        See :meth:`_send_final_goaway` for why the GOAWAY waits.
        """
        self.is_draining = True
        self._wake_receive_loop()

    def _wake_receive_loop(self) -> None:
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _on_peer_closed(self) -> None:
        self._is_broken = True
        for stream in self._streams.values():
            stream.is_reset = True
            if stream.scope is not None:
                stream.scope.cancel()
        self._wake_senders()

    def _wake_senders(self) -> None:
        self._window_opened.set()
        self._window_opened = trio.Event()

    async def run(self) -> None:
        """Serve streams until the connection is done, then close it."""
        try:
            self._h2.initiate_connection()
            self._h2.increment_flow_control_window(CONNECTION_WINDOW_BONUS)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader.run)
                try:
                    await self.flush()
                    await self._receive_loop()
                except ClientDisconnected:
                    pass
                finally:
                    self._on_peer_closed()
                    nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _receive_loop(self) -> None:
        reader = self._reader
        while True:
            if self.is_draining and not self._streams:
                if not self._goaway_sent:
                    await self._send_final_goaway()
                return

            if not reader.has_data:
                if reader.is_closed:
                    return
                idle = not self._streams
                deadline = (
                    trio.current_time() + self._keepalive_timeout
                    if idle
                    else float("inf")
                )
                with trio.CancelScope(deadline=deadline) as scope:
                    self._wait_scope = scope
                    await reader.wait()
                self._wait_scope = None
                if (
                    scope.cancelled_caught
                    and idle
                    and not self.is_draining
                    and not self._streams
                ):
                    logger.debug(
                        "h2 connection idle for %ss; closing", self._keepalive_timeout
                    )
                    await self._close_with(h2.errors.ErrorCodes.NO_ERROR)
                    return
                continue

            data = reader.take()
            if self._preface_head is not None:
                checked = self._check_preface(data)
                if checked is None:
                    await self._close_with(h2.errors.ErrorCodes.PROTOCOL_ERROR)
                    return
                if not checked:
                    continue
                data = checked
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                # h2 has queued a GOAWAY with the matching code; flush it (RFC 9113 5.4.1).
                logger.debug("h2 protocol error from client: %s", exc)
                if _is_hpack_failure(exc):
                    await self._flush_recoded(h2.errors.ErrorCodes.COMPRESSION_ERROR)
                else:
                    await self.flush()
                return
            except Exception:  # pragma: no cover - h2 raised outside its contract
                logger.exception("h2 failed on client data")
                await self._close_with(h2.errors.ErrorCodes.INTERNAL_ERROR)
                return

            for event in events:
                self._dispatch(event)
            await self.flush()

    def _check_preface(self, data: bytes) -> bytes | None:
        """Hold bytes until the first frame's type is known; None if not SETTINGS.

        RFC 9113 3.4: the preface is the magic string followed by a SETTINGS
        frame; anything else is a connection error h2 does not check for.
        """
        head = self._preface_head + data  # type: ignore[operator]
        type_offset = len(H2_PREFACE) + 3
        if len(head) <= type_offset:
            self._preface_head = head
            return b""
        self._preface_head = None
        if head[type_offset] != _SETTINGS_FRAME_TYPE:
            logger.debug("h2 client preface not followed by SETTINGS")
            return None
        return head

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._receive_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._receive_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._complete(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._receive_reset(event.stream_id)
        elif isinstance(
            event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)
        ):
            self._wake_senders()
        elif isinstance(event, h2.events.ConnectionTerminated):
            logger.debug("h2 client sent GOAWAY (%s)", event.error_code)
            if event.error_code:
                self._on_peer_closed()
            self.is_draining = True
            self._goaway_sent = True

    def _receive_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.is_draining:
            # Not processed, so the client may retry it elsewhere (RFC 9113 8.7).
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self._last_processed_stream_id = stream_id
        stream = _Stream(stream_id, list(event.headers), trio.current_time())  # type: ignore[arg-type]
        self._streams[stream_id] = stream

        expects_continue = False
        for name, value in stream.raw_headers:
            if (
                name == b"content-length"
                and value.isdigit()
                and int(value) > self._max_body_bytes
            ):
                # Refuse before the upload (RFC 9110 10.1.1); the answer goes out at once.
                stream.refusal = _body_too_large(self._max_body_bytes)
                stream.completed.set()
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
        if event.stream_ended is not None:
            self._complete(stream)
        elif expects_continue and stream.refusal is None:
            self._h2.send_headers(stream_id, [(b":status", b"100")])

        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, stream)

    def _receive_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        # Acknowledge at once: the bytes are buffered (bounded by the body
        # limit) or dropped, either way the client may send more.
        self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        stream = self._streams.get(stream_id)
        if stream is None or stream.refusal is not None or stream.is_complete:
            return
        data: bytes = event.data  # type: ignore[assignment]
        stream.body_size += len(data)
        if stream.body_size > self._max_body_bytes:
            stream.refusal = _body_too_large(self._max_body_bytes)
            stream.body_parts.clear()
            self._complete(stream)
            return
        stream.body_parts.append(data)

    def _receive_reset(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        logger.debug("request %s: client reset the stream", stream.request_id)
        stream.is_reset = True
        if stream.scope is not None:
            stream.scope.cancel()
        stream.completed.set()
        self._wake_senders()

    def _complete(self, stream: _Stream) -> None:
        stream.is_complete = True
        stream.completed.set()

    async def _send_final_goaway(self) -> None:
        """GOAWAY(NO_ERROR) naming the last stream processed, once none is open.

        RFC 9113 6.8 suggests a GOAWAY at the start of a graceful shutdown,
        but it is a SHOULD, and the h2 library (under httpx, httpcore and
        the Python SDK with HTTP/2) closes its side of the connection on any
        GOAWAY: DATA for a stream still in flight is then a protocol error
        to it, and the response is lost. So while draining, new streams get
        RST_STREAM(REFUSED_STREAM), which tells every client they were not
        processed and may be retried (RFC 9113 8.7), and the GOAWAY goes out
        only after the last open stream ended. A client therefore learns of
        the shutdown per refused stream rather than at once; the listener is
        already closed, so its retry on a new connection fails fast.
        """
        self._goaway_sent = True
        try:
            self._h2.close_connection(
                error_code=h2.errors.ErrorCodes.NO_ERROR,
                last_stream_id=self._last_processed_stream_id,
            )
        except h2.exceptions.ProtocolError:
            return
        try:
            await self.flush()
        except ClientDisconnected:
            pass

    async def _flush_recoded(self, error_code: h2.errors.ErrorCodes) -> None:
        """Flush, giving the GOAWAY h2 just queued the code RFC 9113 asks for.

        h2 reports a header block HPACK cannot decode as PROTOCOL_ERROR;
        RFC 9113 4.3 names COMPRESSION_ERROR, which tells the client that
        the header compression state, not its request, is what broke.
        """
        async with self._write_lock:
            pending = self._h2.data_to_send()
            tail = pending[-_GOAWAY_SIZE:]
            if len(tail) == _GOAWAY_SIZE and tail[3] == _GOAWAY_FRAME_TYPE:
                frame = GoAwayFrame(
                    0,
                    last_stream_id=int.from_bytes(tail[9:13], "big") & 0x7FFFFFFF,
                    error_code=error_code,
                )
                pending = pending[:-_GOAWAY_SIZE] + frame.serialize()
            if pending:
                await self._send(pending)

    async def _close_with(self, error_code: h2.errors.ErrorCodes) -> None:
        try:
            self._h2.close_connection(error_code=error_code)
        except h2.exceptions.ProtocolError:
            return
        await self.flush()

    # Writing

    def mark_queued(self) -> int:
        """A mark for what h2 holds now; flushed once ``_flushed_mark`` reaches it."""
        self._queued_mark += 1
        return self._queued_mark

    async def flush(self) -> None:
        """Hand everything h2 has queued to the transport, under the write lock."""
        async with self._write_lock:
            mark = self._queued_mark
            data = self._h2.data_to_send()
            if data:
                await self._send(data)
            self._flushed_mark = max(self._flushed_mark, mark)

    async def _send(self, data: bytes) -> None:
        if self._is_broken:
            raise ClientDisconnected("the client closed the connection")
        try:
            with trio.move_on_after(self._write_timeout) as scope:
                await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._on_peer_closed()
            raise ClientDisconnected("the client closed the connection") from exc
        if scope.cancelled_caught:
            # The client stopped reading the whole connection.
            self._on_peer_closed()
            raise ClientDisconnected(
                f"the client read nothing for {self._write_timeout}s"
            )

    async def wait_for_window(self, stream: _Stream) -> None:
        """Wait until a WINDOW_UPDATE, a settings change, a reset or a close.

        Raises:
            ClientDisconnected: the window stayed shut for ``write_timeout``
                seconds; the stream is reset, since a client that never opens
                it would hold the handler forever.
        """
        with trio.move_on_after(self._write_timeout):
            await self._window_opened.wait()
            return
        logger.debug(
            "request %s: flow-control window shut for %ss",
            stream.request_id,
            self._write_timeout,
        )
        stream.is_reset = True
        await self._reset(stream, h2.errors.ErrorCodes.CANCEL)
        raise ClientDisconnected(
            f"the client opened no window for {self._write_timeout}s"
        )

    # Streams

    async def _run_stream(self, stream: _Stream) -> None:
        try:
            await self._serve_stream(stream)
        except ClientDisconnected:
            logger.debug("request %s: client went away", stream.request_id)
        except Exception:  # pragma: no cover - a bug here must not end the connection
            logger.exception("request %s: stream failed", stream.request_id)
        finally:
            self._streams.pop(stream.stream_id, None)
            if not self._streams:
                # The receive loop now owes an idle timeout, or the drain is done.
                self._wake_receive_loop()

    async def _serve_stream(self, stream: _Stream) -> None:
        with trio.move_on_after(self._request_timeout):
            await stream.completed.wait()
        if stream.is_reset:
            return

        responder = Http2Responder(
            self, stream, _method_of(stream.raw_headers) == b"HEAD"
        )
        if stream.refusal is not None:
            logger.debug(
                "request %s refused: %s", stream.request_id, stream.refusal.message
            )
            await self._answer_error(responder, stream.refusal)
            await self._reset(stream, h2.errors.ErrorCodes.NO_ERROR)
            try:
                head = attrs.evolve(self._build_request(stream), body=b"")
            except ValueError:
                return
            report_refusal(self._handler, head, stream.refusal)
            return
        if not stream.is_complete:
            logger.debug(
                "request %s did not arrive within %ss",
                stream.request_id,
                self._request_timeout,
            )
            await self._answer_error(
                responder, ApiError(408, "The request did not arrive in time.")
            )
            await self._reset(stream, h2.errors.ErrorCodes.NO_ERROR)
            return

        try:
            request = self._build_request(stream)
        except ValueError as exc:
            await self._answer_error(
                responder, ApiError(400, f"Malformed HTTP/2 request: {exc}")
            )
            return

        failure: Exception | None = None
        aborted = False
        with trio.CancelScope() as scope:
            stream.scope = scope
            if stream.is_reset:
                scope.cancel()
            try:
                await self._handler(request, responder)
            except ClientDisconnected:
                scope.cancel()
            except AbortConnection:
                aborted = True
            except Exception as exc:  # noqa: BLE001 - any handler failure becomes a 500 or a reset
                failure = exc
        stream.scope = None
        if scope.cancelled_caught or stream.is_reset:
            logger.debug("request %s: client went away", stream.request_id)
            return
        if aborted:
            # The stream is this connection's unit of work: it alone is reset.
            await self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return

        if failure is None and responder.is_started:
            await responder.end_response()
        elif responder.is_started:
            logger.error(
                "request %s: handler failed after the response started",
                stream.request_id,
                exc_info=failure,
            )
            await self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif isinstance(failure, ApiError):
            await self._answer_error(responder, failure)
        else:
            if failure is None:
                failure = InternalError("handler returned without a response")
            logger.error(
                "request %s: handler failed", stream.request_id, exc_info=failure
            )
            await self._answer_error(
                responder, ApiError(500, "Internal server error.", "api_error")
            )

    def _build_request(self, stream: _Stream) -> Request:
        method = path_bytes = authority = None
        regular: list[tuple[bytes, bytes]] = []
        for name, value in stream.raw_headers:
            if name[:1] != b":":
                regular.append((name, value))
            elif name == b":method":
                method = value
            elif name == b":path":
                path_bytes = value
            elif name == b":authority":
                authority = value
        if (
            method is None or path_bytes is None
        ):  # h2 validation makes this rare (CONNECT)
            raise ValueError("missing :method or :path")
        headers = decode_headers(regular)
        if authority is not None and "host" not in headers:
            headers = Headers((("host", authority.decode("latin-1")),) + headers.items)

        target = path_bytes.decode("latin-1")
        path, _, query = target.partition("?")
        parts = stream.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        stream.body_parts = []
        return Request(
            method=method.decode("ascii", "replace"),
            target=target,
            path=path,
            query=query,
            headers=headers,
            body=body,
            http_version=_HTTP_VERSION,
            client=self._client,
            started_at=stream.started_at,
            request_id=stream.request_id,
        )

    async def _answer_error(self, responder: Http2Responder, error: ApiError) -> None:
        headers, body = error_response(error, responder.request_id)
        try:
            await responder.start_response(error.status, headers)
            await responder.send_data(body)
            await responder.end_response()
        except ClientDisconnected:
            pass

    async def _reset(self, stream: _Stream, error_code: h2.errors.ErrorCodes) -> None:
        """Reset a stream that is not closed yet; a closed one needs nothing."""
        try:
            self._h2.reset_stream(stream.stream_id, error_code)
        except h2.exceptions.ProtocolError:
            return
        try:
            await self.flush()
        except ClientDisconnected:
            pass


class Http2Responder(Responder):
    """The :class:`~ccag.server.types.Responder` of one HTTP/2 stream."""

    __slots__ = (
        "_body_mark",
        "_connection",
        "_ended",
        "_h2",
        "_is_head",
        "_started",
        "_stream",
        "_stream_id",
    )

    def __init__(
        self, connection: Http2Connection, stream: _Stream, is_head: bool
    ) -> None:
        self._connection = connection
        self._h2 = connection._h2
        self._stream = stream
        self._stream_id = stream.stream_id
        self._is_head = is_head
        self._started = False
        self._ended = False
        # The connection's queue mark of the last send_data's final frame.
        self._body_mark: int | None = None

    @property
    def body_flushed(self) -> bool:
        """The last ``send_data``'s frames are all with the kernel.

        Whichever task flushed them: while this one waits for the write
        lock, another stream's (or the connection's) flush may carry them.
        """
        mark = self._body_mark
        return mark is not None and self._connection._flushed_mark >= mark

    @property
    def request_id(self) -> str:
        return self._stream.request_id

    @property
    def is_started(self) -> bool:
        return self._started

    def _check_alive(self) -> None:
        if self._stream.is_reset or self._connection._is_broken:
            raise ClientDisconnected(
                "the client reset the stream or closed the connection"
            )

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self._started:
            raise InternalError("start_response called twice")
        self._check_alive()
        raw = [
            (b":status", str(status).encode()),
            (b"request-id", self._stream.request_id.encode()),
        ]
        for name, value in headers:
            lowered = name.lower()
            if lowered not in _HOP_BY_HOP:
                raw.append((lowered.encode("latin-1"), value.encode("latin-1")))
        self._started = True
        try:
            self._h2.send_headers(self._stream_id, raw, end_stream=self._is_head)
        except h2.exceptions.StreamClosedError as exc:
            raise ClientDisconnected("the client reset the stream") from exc
        if self._is_head:
            self._ended = True
            await self._connection.flush()
        else:
            # HEADERS wait in h2's buffer for the first DATA: one write for both.
            await trio.lowlevel.checkpoint()

    async def send_data(self, data: bytes) -> None:
        if not self._started:
            raise InternalError("send_data before start_response")
        if self._is_head:
            # A HEAD response has no body (RFC 9110 9.3.2).
            self._check_alive()
            return
        if self._ended:
            raise InternalError("send_data after end_response")

        connection = self._connection
        h2_connection = self._h2
        stream_id = self._stream_id
        remaining: bytes | memoryview = data
        self._body_mark = None
        while remaining:
            self._check_alive()
            try:
                window = h2_connection.local_flow_control_window(stream_id)
            except h2.exceptions.StreamClosedError as exc:
                raise ClientDisconnected("the stream is closed") from exc
            if window <= 0:
                await connection.wait_for_window(self._stream)
                continue

            # As many frames as the window allows, then one write.
            frame_size = h2_connection.max_outbound_frame_size
            while remaining and window > 0:
                size = min(window, frame_size)
                if size >= len(remaining):
                    chunk, remaining = remaining, b""
                else:
                    view = memoryview(remaining)
                    chunk, remaining = view[:size], view[size:]
                h2_connection.send_data(stream_id, chunk)  # type: ignore[arg-type]
                window -= len(chunk)
            if not remaining:
                self._body_mark = connection.mark_queued()
            await connection.flush()

    async def end_response(self) -> None:
        if self._ended:
            return
        if not self._started:
            raise InternalError("end_response before start_response")
        self._ended = True
        self._check_alive()
        try:
            self._h2.end_stream(self._stream_id)
        except h2.exceptions.StreamClosedError as exc:
            raise ClientDisconnected("the stream is closed") from exc
        await self._connection.flush()


def _is_hpack_failure(error: BaseException) -> bool:
    cause = error.__cause__
    return isinstance(cause, hpack.exceptions.HPACKError) and not isinstance(
        cause, hpack.exceptions.OversizedHeaderListError
    )


def _method_of(raw_headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in raw_headers:
        if name == b":method":
            return value
    return None


def _body_too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"Request body exceeds the limit of {limit} bytes.", "request_too_large"
    )
