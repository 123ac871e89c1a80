"""Handing an HTTP/1.1 connection over to another protocol (RFC 9110 7.8).

A handler that wants the raw connection (a WebSocket, say) calls
``responder.take_over()`` before it starts a response. It gets a
:class:`TakenOverStream`: a plain Trio stream whose first bytes are the
request head exactly as the client meant it (serialised again from what h11
parsed), followed by whatever the client sent after the head. A protocol
library that expects to read the opening handshake itself (trio-websocket's
``wrap_server_stream``) can thus be handed the stream unchanged, and the
server stays ignorant of the protocol it carries.

The connection's background reader keeps owning the socket's receive side
(it is what notices a client that goes away), so reads are served from its
buffer; writes go through the driver's writer and inherit its write timeout,
so a peer that stops reading is dropped, never waited for forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import trio

from ccag.errors import ClientDisconnected
from ccag.server.common import ConnectionReader


def replayed_head(event: h11.Request) -> bytes:
    """The request head of ``event`` as bytes on the wire.

    h11 has consumed the original bytes; a client-side h11 connection writes
    an equivalent head (names lower-cased, which HTTP treats alike).
    """
    client = h11.Connection(h11.CLIENT)
    return client.send(
        h11.Request(method=event.method, target=event.target, headers=event.headers)
    ) or b""


class TakenOverStream(trio.abc.Stream):
    """The raw connection after an HTTP/1.1 request was taken over.

    Args:
        reader: the connection's background reader (source of received bytes).
        replay: bytes to return before any newly received ones.
        write: the driver's bounded write (raises ClientDisconnected).
        transport: the stream under it all, for socket options and closing.
    """

    def __init__(
        self,
        reader: ConnectionReader,
        replay: bytes,
        write: Callable[[bytes], Awaitable[None]],
        transport: trio.abc.Stream,
    ) -> None:
        self._reader = reader
        self._pending = bytearray(replay)
        self._write = write
        self._transport = transport
        self._is_closed = False

    @property
    def socket_stream(self) -> trio.SocketStream | None:
        """The TCP stream underneath (for socket options), if there is one."""
        inner: object = self._transport
        while isinstance(inner, trio.SSLStream):
            inner = inner.transport_stream
        return inner if isinstance(inner, trio.SocketStream) else None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._is_closed:
            raise trio.ClosedResourceError("the taken-over stream is closed")
        if not self._pending:
            await self._reader.wait()
            self._pending += self._reader.take()
        else:
            await trio.lowlevel.checkpoint()
        if not self._pending:
            return b""  # the reader saw the peer close

        size = len(self._pending) if max_bytes is None else max_bytes
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._is_closed:
            raise trio.ClosedResourceError("the taken-over stream is closed")
        try:
            await self._write(bytes(data))
        except ClientDisconnected as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self._transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._is_closed = True
        await trio.aclose_forcefully(self._transport)
