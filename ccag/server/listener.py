"""The listener: accept connections, pick a protocol, drain on shutdown.

Each accepted connection gets one task (and its own nursery inside the
driver). Cleartext connections whose first bytes are the HTTP/2 connection
preface speak h2 with prior knowledge (RFC 9113 3.3); all others speak
HTTP/1.1. With a certificate, TLS offers ``h2`` and ``http/1.1`` by ALPN and
the negotiated protocol picks the driver.

Shutdown: when the ``shutdown`` event is set the listener stops accepting,
every connection is told to drain (idle HTTP/1.1 connections close at once,
HTTP/2 connections get a GOAWAY), in-flight requests get ``shutdown_grace``
seconds, and whatever is left is cancelled.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ccag.config import Config
from ccag.errors import ConfigError
from ccag.server.common import READ_SIZE, is_accept_exhaustion
from ccag.server.http1 import Http1Connection
from ccag.server.http2 import H2_PREFACE, Http2Connection
from ccag.server.types import Handler

logger = logging.getLogger("ccag.server")

# How long accept() backs off when the process runs out of file descriptors
# or memory: long enough to let connections close, short enough to recover fast.
ACCEPT_BACKOFF_SECONDS = 0.1

ALPN_PROTOCOLS = ["h2", "http/1.1"]

# After the shutdown grace: how long requests told to end may take to write
# their last words before they are cancelled.
LAST_WORDS_SECONDS = 1.0


class _Drainable(Protocol):
    def start_draining(self) -> None: ...

    async def run(self) -> None: ...


class _Server:
    def __init__(
        self, handler: Handler, config: Config, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.handler = handler
        self.config = config
        self.ssl_context = ssl_context
        self.connections: set[_Drainable] = set()
        self.opening: set[trio.CancelScope] = set()
        self.open_tasks = 0
        self.is_draining = False
        self.all_closed = trio.Event()

    async def accept_loop(
        self, listener: trio.SocketListener, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if not is_accept_exhaustion(exc):
                    raise
                logger.error(
                    "accept failed (%s); retrying in %ss", exc, ACCEPT_BACKOFF_SECONDS
                )
                await trio.sleep(ACCEPT_BACKOFF_SECONDS)
                continue
            self.open_tasks += 1
            nursery.start_soon(self.handle_connection, stream)

    def drain(self) -> None:
        self.is_draining = True
        for scope in self.opening:
            scope.cancel()
        for connection in list(self.connections):
            connection.start_draining()
        if self.open_tasks == 0:
            self.all_closed.set()

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        connection: _Drainable | None = None
        stream_to_close: trio.abc.Stream = stream
        try:
            # A client that connects and stays silent must not hold up a drain.
            with trio.CancelScope() as opening:
                self.opening.add(opening)
                if self.is_draining:
                    opening.cancel()
                connection = await self._open_connection(stream)
            self.opening.discard(opening)
            if connection is None:
                return
            self.connections.add(connection)
            if self.is_draining:
                connection.start_draining()
            await connection.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("connection ended: %r", exc)
        except Exception:
            # A bug in a driver must cost one connection, never the server.
            logger.exception("connection failed")
        finally:
            if connection is not None:
                self.connections.discard(connection)
            await trio.aclose_forcefully(stream_to_close)
            self.open_tasks -= 1
            if self.is_draining and self.open_tasks == 0:
                self.all_closed.set()

    async def _open_connection(self, stream: trio.SocketStream) -> _Drainable | None:
        config = self.config
        if self.ssl_context is not None:
            tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
            with trio.move_on_after(config.request_timeout) as scope:
                await tls.do_handshake()
            if scope.cancelled_caught:
                await trio.aclose_forcefully(tls)
                return None
            if tls.selected_alpn_protocol() == "h2":
                return Http2Connection(tls, self.handler, config)
            return Http1Connection(tls, self.handler, config)

        initial = await _sniff_preface(stream, config)
        if not initial:
            return None
        if initial.startswith(H2_PREFACE):
            return Http2Connection(stream, self.handler, config, initial)
        return Http1Connection(stream, self.handler, config, initial)


async def _sniff_preface(stream: trio.abc.Stream, config: Config) -> bytes:
    """The first bytes of a cleartext connection: enough to tell h2 from HTTP/1.1.

    Returns ``b""`` when the client closed or sent nothing in time.
    """
    data: bytes | bytearray = b""
    with trio.move_on_after(config.keepalive_timeout):
        data = await stream.receive_some(READ_SIZE)
    if not data:
        return b""
    with trio.move_on_after(config.request_timeout):
        while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
            more = await stream.receive_some(READ_SIZE)
            if not more:
                break
            data += more
    return bytes(data)


def _tls_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # RFC 9113 9.2: HTTP/2 over TLS needs TLS 1.2 or later.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls_cert/tls_key: cannot load {config.tls_cert} and {config.tls_key}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from exc
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


async def open_listeners(config: Config) -> list[trio.SocketListener]:
    """Bind ``config.host``:``config.port`` (0: a free port) and listen.

    A program that must not start anything when its port is taken binds
    first and hands the listeners to :func:`serve`.

    Raises:
        OSError: the address cannot be bound; its filename is the address.
    """
    try:
        return await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        # Name the address: "Address already in use" alone does not say which.
        raise OSError(exc.errno, exc.strerror, f"{config.host}:{config.port}") from exc


async def serve(
    handler: Handler,
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    listeners: list[trio.SocketListener] | None = None,
    name: str = "",
    on_grace_expired: Callable[[], None] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/1.1 and HTTP/2 on ``config.host``:``config.port``.

    Args:
        handler: called once per request, see :mod:`ccag.server.types`.
        config: host, port, TLS files, limits and timeouts.
        shutdown: when set, stop accepting, drain connections for up to
            ``config.shutdown_grace`` seconds and return. Without it, serve
            runs until cancelled.
        listeners: already bound by :func:`open_listeners`; serve closes
            them when it returns. Without them, serve binds itself.
        name: what this server is, put before "listening on" in the log
            when several servers share a process (the embedded simulator
            must not pass for the gateway).
        on_grace_expired: called when the shutdown grace ran out with
            requests still under way, before they are cancelled; they get
            LAST_WORDS_SECONDS to end themselves (a stream's error event).
        task_status: receives the bound port (useful with port 0).

    Raises:
        OSError: the address cannot be bound.
    """
    try:
        ssl_context = _tls_context(config) if config.tls_cert else None
    except ConfigError:
        for listener in listeners or ():
            await trio.aclose_forcefully(listener)
        raise
    if listeners is None:
        listeners = await open_listeners(config)
    port = int(listeners[0].socket.getsockname()[1])
    server = _Server(handler, config, ssl_context)
    logger.info(
        "%slistening on %s:%d (%s)",
        f"{name} " if name else "",
        config.host,
        port,
        "TLS" if ssl_context else "cleartext",
    )

    try:
        async with trio.open_nursery() as connection_nursery:
            async with trio.open_nursery() as accept_nursery:
                for listener in listeners:
                    accept_nursery.start_soon(
                        server.accept_loop, listener, connection_nursery
                    )
                task_status.started(port)
                if shutdown is None:
                    await trio.sleep_forever()
                else:
                    await shutdown.wait()
                accept_nursery.cancel_scope.cancel()
            for listener in listeners:
                await trio.aclose_forcefully(listener)

            logger.info(
                "shutting down: draining connections for up to %ss",
                config.shutdown_grace,
            )
            server.drain()
            with trio.move_on_after(config.shutdown_grace):
                await server.all_closed.wait()
            if on_grace_expired is not None and not server.all_closed.is_set():
                # Streams still running get a last event (the handler's
                # choice) rather than a cut connection.
                on_grace_expired()
                with trio.move_on_after(LAST_WORDS_SECONDS):
                    await server.all_closed.wait()
            connection_nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
