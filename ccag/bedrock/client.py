"""The Bedrock Runtime client: sign, send, and stream the answer back.

One call is ``async with client.post(path, body) as response``. Each attempt
is signed just before it is sent, with credentials fetched for that attempt,
so a retry or a long queue never sends an expired signature. The response is
yielded as soon as its head has arrived; the body is read by the caller, a
chunk at a time, as it arrives.

The connection's fate is decided when the ``async with`` block ends. If the
whole body was read, it goes back to the pool. Otherwise (the caller stopped
early, raised, or was cancelled because its client went away) it is closed:
closing is how Bedrock learns to stop generating, and a half-read connection
could never carry another request anyway.
"""

from __future__ import annotations

import datetime
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import h11
import trio

from ccag import __version__
from ccag.bedrock.chunked import ChunkedDecoder
from ccag.bedrock.credentials import CredentialSource
from ccag.bedrock.drainer import Drainer
from ccag.bedrock.endpoint import parse_endpoint
from ccag.bedrock.errors import (
    CredentialsError,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccag.bedrock.pool import (
    MAX_IDLE_SECONDS,
    RECEIVE_CHUNK_SIZE,
    Connection,
    ConnectionPool,
)
from ccag.bedrock.signing import bearer_auth, sign_request
from ccag.errors import InternalError

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_FIRST_BYTE_TIMEOUT = 300.0
DEFAULT_POOL_SIZE = 256

# A pooled connection the server closed while it sat idle fails before any
# byte of a response; that one attempt is repeated on a new connection. Only
# once: a second failure on a fresh connection is a real failure.
STALE_CONNECTION_RETRIES = 1

# Bodies up to this size are sent in the same write as the request head (one
# system call, one TLS record run); larger ones are not worth copying for it.
COALESCE_BODY_BYTES = 256 * 1024

# How long the end of a body the reader is done with (the last chunk after a
# stream's message_stop) may take before the connection is closed instead.
FINISH_TIMEOUT = 1.0

USER_AGENT = f"ccag/{__version__}"

# What h11 is shown of every request (see _encode_request); events are
# immutable, so one of each serves every connection.
_H11_REQUEST = h11.Request(
    method="POST", target="/", headers=[("host", "bedrock"), ("content-length", "0")]
)
_H11_END = h11.EndOfMessage()

logger = logging.getLogger(__name__)


class _StaleConnection(Exception):
    """A reused connection failed before the response began (internal)."""


class UpstreamResponse:
    """The head of a Bedrock response, and its body as it arrives.

    A chunked body (every streamed answer) is decoded by
    :class:`~ccag.bedrock.chunked.ChunkedDecoder`, one socket read at a time;
    other bodies go through h11.

    Attributes:
        status: the HTTP status code.
        headers: (lower-case name, value) pairs in arrival order.
    """

    __slots__ = (
        "_chunked",
        "_complete",
        "_connection",
        "_idle_timeout",
        "_is_framed",
        "_leftover",
        "headers",
        "reader_done",
        "status",
    )

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        connection: Connection,
        idle_timeout: float | None,
        *,
        chunked: bool = False,
        leftover: bytes = b"",
    ) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._idle_timeout = idle_timeout
        self._complete = False
        self._is_framed = any(
            name in ("content-length", "transfer-encoding") for name, _ in headers
        )
        self._chunked = ChunkedDecoder() if chunked else None
        self._leftover = leftover
        # Set by a reader that has all it wants (a stream past message_stop):
        # what is left is only the end of the framing, worth reading so the
        # connection can be reused (see BedrockClient.post).
        self.reader_done = False

    @property
    def is_complete(self) -> bool:
        """Whether the whole body has been read."""
        return self._complete

    def header(self, name: str) -> str | None:
        """The first value of a header (lower-case name), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def receive_some(self) -> bytes:
        """The next part of the body: everything that arrived with one read.

        Returns:
            Body bytes, or ``b""`` once the body is complete.

        Raises:
            UpstreamClosed: the connection broke before the body was complete.
            UpstreamProtocolError: the body's framing is broken.
            UpstreamTimeout: nothing arrived for ``idle_timeout`` seconds.
        """
        if self._complete:
            return b""
        if self._chunked is not None:
            return await self._receive_chunked(self._chunked)
        return await self._receive_through_h11()

    def finish_without_waiting(self) -> bool:
        """Read what has already arrived of the rest of the body; True if done.

        Only for a plain TCP stream (which can read without waiting) and a
        chunked body; body bytes found are dropped (the reader is done).
        """
        if self.is_complete_without_io():
            return True
        receive_nowait = getattr(self._connection.stream, "receive_nowait", None)
        decoder = self._chunked
        if receive_nowait is None or decoder is None:
            return False
        try:
            while not decoder.is_done:
                data = receive_nowait(RECEIVE_CHUNK_SIZE)
                if not data:
                    return False
                decoder.feed(data)
        except (UpstreamProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self._complete = True
        self._connection.finished_body_outside_h11()
        return True

    def is_complete_without_io(self) -> bool:
        """Whether the rest of the body is already buffered (e.g. a 0-length body).

        A caller that stops reading a body that has in fact fully arrived
        leaves a connection that can still be reused; this finds that out
        without reading from the socket.
        """
        if self._complete:
            return True
        try:
            if self._chunked is not None:
                self._chunked.feed(self._leftover)
                self._leftover = b""
                self._complete = self._chunked.is_done
                return self._complete
            h11_connection = self._connection.h11
            while True:
                event = h11_connection.next_event()
                if type(event) is h11.EndOfMessage:
                    self._complete = True
                    return True
                if type(event) is not h11.Data:
                    return False
        except (h11.RemoteProtocolError, UpstreamProtocolError):
            return False

    async def read_all(self, limit: int) -> bytes:
        """The rest of the body, at most ``limit`` bytes.

        Raises:
            UpstreamProtocolError: the body is longer than ``limit``.
            UpstreamClosed, UpstreamTimeout: as for :meth:`receive_some`.
        """
        pieces: list[bytes] = []
        size = 0
        while True:
            piece = await self.receive_some()
            if not piece:
                return b"".join(pieces)
            size += len(piece)
            if size > limit:
                raise UpstreamProtocolError(f"Bedrock's response is larger than {limit} bytes")
            pieces.append(piece)

    async def _receive_chunked(self, decoder: ChunkedDecoder) -> bytes:
        while True:
            if self._leftover:
                data = self._leftover
                self._leftover = b""
            else:
                data = await self._read_socket()
                if not data:
                    raise UpstreamClosed("the connection to Bedrock closed mid-body")

            body = decoder.feed(data)
            if decoder.is_done:
                self._complete = True
                self._connection.finished_body_outside_h11()
                return body
            if body:
                return body

    async def _receive_through_h11(self) -> bytes:
        connection = self._connection
        pieces: list[bytes | bytearray] = []
        while True:
            try:
                event = connection.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamProtocolError(f"Bedrock sent a malformed body: {exc}") from exc

            if type(event) is h11.Data:
                pieces.append(event.data)
            elif event is h11.NEED_DATA:
                # Hand over what this read brought before waiting for more.
                if pieces:
                    return b"".join(pieces)
                data = await self._read_socket()
                if not data and self._is_framed:
                    # Cut short by the peer, not malformed: only a body that
                    # runs to the close may end at EOF (h11 ends it there).
                    raise UpstreamClosed("the connection to Bedrock closed mid-body")
                connection.h11.receive_data(data)
            elif type(event) is h11.EndOfMessage:
                self._complete = True
                return b"".join(pieces)
            else:
                raise UpstreamProtocolError(f"unexpected {type(event).__name__} in a body")

    async def _read_socket(self) -> bytes:
        stream = self._connection.stream
        try:
            if self._idle_timeout is None:
                data = await stream.receive_some(RECEIVE_CHUNK_SIZE)
            else:
                with trio.fail_after(self._idle_timeout):
                    data = await stream.receive_some(RECEIVE_CHUNK_SIZE)
        except trio.TooSlowError as exc:
            raise UpstreamTimeout(
                f"Bedrock sent nothing for {self._idle_timeout:g} s", "read"
            ) from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise UpstreamClosed(f"the connection to Bedrock broke: {exc}") from exc
        # bytes() of a bytes object is that object: no copy on the usual path.
        return bytes(data)


async def _receive_head_bytes(connection: Connection, may_be_stale: bool) -> bytes:
    """Bytes of a response head; a reused connection failing first is stale."""
    try:
        data = await connection.stream.receive_some(RECEIVE_CHUNK_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if may_be_stale:
            raise _StaleConnection() from exc
        raise UpstreamClosed(f"the connection to Bedrock broke: {exc}") from exc
    if not data:
        if may_be_stale:
            raise _StaleConnection()
        raise UpstreamClosed("Bedrock closed the connection without answering")
    # bytes() of a bytes object is that object: no copy on the usual path.
    return bytes(data)


class BedrockClient:
    """A pooled HTTP/1.1 client for one Bedrock Runtime endpoint.

    Args:
        endpoint_url: ``https://bedrock-runtime.<region>.amazonaws.com``, or an
            ``http://`` URL of a stand-in such as the simulator.
        region: the signing region.
        credentials: where AWS credentials come from; may be None when
            ``bearer_token`` is given.
        service: the SigV4 signing name.
        connect_timeout: seconds for TCP connect plus TLS handshake.
        pool_size: idle connections kept.
        bearer_token: a Bedrock API key; when set, requests carry
            ``Authorization: Bearer`` instead of a SigV4 signature.
        ssl_context: TLS settings; the system trust store if None.
        max_idle_seconds: idle connections older than this are not reused.
        environ: where the proxy variables are read; ``os.environ`` if None.
        drainer: finishes the end of streamed bodies in the background (see
            ccag.bedrock.drainer); without one the request reads it itself.
    """

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource | None,
        *,
        service: str = "bedrock",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        bearer_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_seconds: float = MAX_IDLE_SECONDS,
        environ: Mapping[str, str] | None = None,
        drainer: Drainer | None = None,
    ) -> None:
        if credentials is None and bearer_token is None:
            raise CredentialsError("BedrockClient needs credentials or a bearer token")
        self.endpoint = parse_endpoint(endpoint_url)
        self.region = region
        self._credentials = credentials
        self._service = service
        self._bearer_token = bearer_token
        self._drainer = drainer
        self._pool = ConnectionPool(
            self.endpoint,
            connect_timeout=connect_timeout,
            pool_size=pool_size,
            ssl_context=ssl_context,
            max_idle_seconds=max_idle_seconds,
            environ=environ,
        )

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    @asynccontextmanager
    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """POST ``body`` to ``path``; yield the response once its head arrived.

        Args:
            path: the request path, already percent-encoded
                (:func:`ccag.bedrock.signing.model_path`).
            body: the request body.
            headers: extra headers to send and sign, such as ``content-type``.
            first_byte_timeout: seconds from sending to the response head.
            idle_timeout: seconds the body may stay silent before
                :class:`UpstreamTimeout`; None leaves that to the caller.

        Raises:
            UpstreamConnectError, UpstreamTimeout, UpstreamProtocolError,
            UpstreamClosed, CredentialsError: see ``ccag.bedrock.errors``.
        """
        target = self.endpoint.base_path + path
        attempts_left = STALE_CONNECTION_RETRIES
        fresh = False
        while True:
            connection = await self._pool.acquire(fresh=fresh)
            try:
                response = await self._exchange(
                    connection, target, body, headers, first_byte_timeout, idle_timeout
                )
            except _StaleConnection:
                await self._pool.discard(connection)
                if attempts_left == 0:
                    raise UpstreamClosed("Bedrock closed the connection without answering")
                logger.debug("%s: pooled connection was closed by the server; retrying", target)
                attempts_left -= 1
                fresh = True
                continue
            except BaseException:
                await self._pool.discard(connection)
                raise
            break

        try:
            yield response
        except BaseException:
            await self._pool.discard(connection)
            raise
        if response.is_complete_without_io():
            await self._pool.release(connection)
        elif not response.reader_done:
            # Abandoned mid-body: what is left may be long; close instead.
            await self._pool.discard(connection)
        elif response.finish_without_waiting():
            await self._pool.release(connection)
        elif self._drainer is None or not self._drainer.start(
            functools.partial(self._finish, connection, response)
        ):
            await self._finish(connection, response)

    async def _finish(self, connection: Connection, response: UpstreamResponse) -> None:
        """Read the end of a body the reader is done with, then pool or close.

        Never raises: a broken or slow end (FINISH_TIMEOUT) closes the
        connection, and so does a cancellation.
        """
        released = False
        try:
            with trio.move_on_after(FINISH_TIMEOUT):
                while await response.receive_some():
                    pass
            if response.is_complete:
                released = True
                await self._pool.release(connection)
        except UpstreamError:
            pass
        finally:
            if not released:
                with trio.CancelScope(shield=True):
                    await self._pool.discard(connection)

    async def aclose(self) -> None:
        """Close the idle connections."""
        await self._pool.aclose()

    async def _exchange(
        self,
        connection: Connection,
        target: str,
        body: bytes,
        headers: Mapping[str, str] | None,
        first_byte_timeout: float,
        idle_timeout: float | None,
    ) -> UpstreamResponse:
        """Sign and send one request, then read the response head."""
        request_bytes = await self._encode_request(connection, target, body, headers)
        was_reused = connection.is_reused
        received_any = False
        try:
            with trio.fail_after(first_byte_timeout):
                try:
                    for piece in request_bytes:
                        await connection.stream.send_all(piece)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    if was_reused:
                        raise _StaleConnection() from exc
                    raise UpstreamClosed(f"sending to Bedrock failed: {exc}") from exc
                connection.requests_sent += 1

                while True:
                    event = connection.h11.next_event()
                    if event is h11.NEED_DATA:
                        data = await _receive_head_bytes(connection, was_reused and not received_any)
                        received_any = True
                        connection.h11.receive_data(data)
                    elif type(event) is h11.Response:
                        break
                    elif type(event) is h11.InformationalResponse:
                        continue
                    else:
                        raise UpstreamProtocolError(f"unexpected {type(event).__name__}")
        except trio.TooSlowError as exc:
            raise UpstreamTimeout(
                f"Bedrock did not answer within {first_byte_timeout:g} s", "first_byte"
            ) from exc
        except h11.RemoteProtocolError as exc:
            raise UpstreamProtocolError(f"Bedrock sent a malformed response: {exc}") from exc

        response_headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
        ]
        if not _is_chunked(event.headers):
            return UpstreamResponse(event.status_code, response_headers, connection, idle_timeout)

        # From here on the body bypasses h11 (see ChunkedDecoder): take what
        # h11 already buffered, and decide keep-alive as h11 would.
        leftover, _ = connection.h11.trailing_data
        connection.keep_alive = event.http_version == b"1.1" and not _says_close(event.headers)
        return UpstreamResponse(
            event.status_code,
            response_headers,
            connection,
            idle_timeout,
            chunked=True,
            leftover=bytes(leftover),
        )

    async def _encode_request(
        self,
        connection: Connection,
        target: str,
        body: bytes,
        headers: Mapping[str, str] | None,
    ) -> list[bytes]:
        """The request's bytes, signed now with the credentials of now."""
        to_sign: list[tuple[str, str]] = [("host", self.endpoint.host_header)]
        if headers:
            to_sign.extend(headers.items())

        if self._bearer_token is not None:
            signed = bearer_auth(to_sign, self._bearer_token)
        else:
            assert self._credentials is not None
            credentials = await self._credentials.get()
            now = datetime.datetime.now(datetime.UTC)
            url = self.endpoint.url + target
            signed = sign_request(
                "POST", url, to_sign, body, credentials, self.region, self._service, now
            )

        # Sent but not signed, as boto3 does: the length is the HTTP layer's.
        content_length = str(len(body))
        signed.append(("content-length", content_length))
        signed.append(("user-agent", USER_AGENT))
        head = _serialize_head(target, signed)

        # h11 needs to see a request to frame the response, which depends on
        # the method alone: it is shown one prebuilt body-less POST, which
        # spares it validating a new event and walking the body per request.
        # The bytes sent are ours.
        connection.h11.send(_H11_REQUEST)
        connection.h11.send(_H11_END)

        if len(body) <= COALESCE_BODY_BYTES:
            return [head + body]
        return [head, body]


def _is_chunked(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    # RFC 9112 6.1: chunked, when present, is the last transfer coding.
    for name, value in headers:
        if name == b"transfer-encoding":
            return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
    return False


def _says_close(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"connection" and b"close" in value.lower():
            return True
    return False


def _serialize_head(target: str, headers: list[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 POST request head.

    Raises:
        InternalError: a name, value or the target holds a line break or a
            non-ASCII character; they all come from our own code, never
            from a client, so that is a bug, and sending it would let one
            header smuggle in others.
    """
    lines = [f"POST {target} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    try:
        head = "".join(lines).encode("ascii")
    except UnicodeEncodeError as exc:
        raise InternalError("non-ASCII request head for Bedrock") from exc
    line_count = len(headers) + 2
    if head.count(b"\n") != line_count or head.count(b"\r") != line_count:
        raise InternalError("line break inside a request header for Bedrock")
    return head
