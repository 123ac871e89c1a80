"""Keep-alive HTTP/1.1 connections to one Bedrock host.

A :class:`Connection` is a Trio stream (TCP, or TLS over TCP) and the h11
state machine that frames requests and responses on it. The
:class:`ConnectionPool` opens them, lends them out one request at a time and
takes back those whose exchange ended cleanly. Idle connections are kept
newest first, at most ``pool_size`` of them, and none older than
``max_idle_seconds``: servers close idle connections on their own schedule,
and a connection they closed is only found out by writing to it.

Where ``HTTPS_PROXY`` (or ``HTTP_PROXY``) says so, each connection is a
``CONNECT`` tunnel through that proxy, with TLS to Bedrock inside it
(``ccag.bedrock.proxy``); for an ``https://`` proxy the tunnel itself runs
over TLS to the proxy, so Bedrock's TLS runs inside the proxy's.

The pool bounds idle connections, not busy ones; busy ones are bounded only by
:data:`MAX_ACTIVE_CONNECTIONS`, a guard against running out of file
descriptors, not a concurrency limit.
"""

from __future__ import annotations

import collections
import logging
import os
import ssl
from collections.abc import Mapping

import h11
import trio

from ccag.bedrock.endpoint import Endpoint
from ccag.bedrock.errors import UpstreamConnectError, UpstreamTimeout
from ccag.bedrock.proxy import (
    Proxy,
    ProxyProtocolError,
    ProxyReply,
    ProxyReplyReader,
    connect_request,
    proxy_for,
    proxy_setting,
)
from ccag.server.fastio import LeanSocketStream

# One read from the socket: large enough that a burst of event-stream frames
# arrives in one piece, small enough to keep per-connection memory modest.
RECEIVE_CHUNK_SIZE = 64 * 1024

# Bedrock's load balancers close connections that sit idle for about a
# minute; dropping ours a little earlier avoids writing into a closing one.
MAX_IDLE_SECONDS = 50.0

# Connections lent out at once, across all requests to one host. Each is a
# file descriptor; past this, requests wait for one to come back.
MAX_ACTIVE_CONNECTIONS = 4096

# The largest response head accepted. Bedrock's are well under 2 KiB; this
# only stops a broken peer from growing the buffer without end.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

logger = logging.getLogger(__name__)

# ALPN: we speak HTTP/1.1 only, so say so and get no surprises.
ALPN_PROTOCOLS = ["http/1.1"]


class Connection:
    """One HTTP/1.1 connection and its h11 state.

    Attributes:
        stream: the byte stream (``trio.SocketStream`` or ``trio.SSLStream``).
        h11: the client-side h11 state machine.
        requests_sent: how many requests this connection has carried.
        idle_since: ``trio.current_time()`` when it last went back to the pool.
    """

    __slots__ = (
        "_body_done_outside_h11",
        "_socket",
        "h11",
        "idle_since",
        "keep_alive",
        "requests_sent",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD_BYTES)
        self.requests_sent = 0
        self.idle_since = 0.0
        self.keep_alive = True
        self._socket = socket
        self._body_done_outside_h11 = False

    @property
    def is_reused(self) -> bool:
        """Whether a request was already carried (the peer may since have closed)."""
        return self.requests_sent > 0

    def is_dropped_by_peer(self) -> bool:
        """Whether an idle connection has something to read: EOF or junk.

        Either way it cannot carry a request: a server may not send anything
        before a request, so what is readable is the peer closing.
        """
        return self._socket.is_readable()

    def finished_body_outside_h11(self) -> None:
        """The response body was read to its end by a decoder of our own.

        h11 saw the head only; whether the connection stays open is then
        ``keep_alive``, as set by whoever read the head.
        """
        self._body_done_outside_h11 = True

    def can_be_reused(self) -> bool:
        """Whether both sides finished their message and kept the connection open."""
        if self.h11.our_state is not h11.DONE:
            return False
        if self._body_done_outside_h11:
            return self.keep_alive
        return self.h11.their_state is h11.DONE

    def start_next_request(self) -> None:
        """Make ready for the next exchange (only after :meth:`can_be_reused`)."""
        if self._body_done_outside_h11:
            self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD_BYTES)
            self._body_done_outside_h11 = False
            self.keep_alive = True
        else:
            self.h11.start_next_cycle()

    async def aclose(self) -> None:
        """Close now, without a graceful TLS shutdown: nobody waits for it."""
        await trio.aclose_forcefully(self.stream)


class ConnectionPool:
    """Connections to one endpoint, reused across requests.

    Args:
        endpoint: where to connect.
        connect_timeout: seconds for TCP connect, the proxy's CONNECT (if
            any) and the TLS handshake, together.
        pool_size: idle connections kept at most.
        ssl_context: for ``https`` endpoints and ``https://`` proxies; the
            system trust store if None.
        max_idle_seconds: idle connections older than this are closed, not lent.
        max_active: connections lent out at once at most.
        environ: where ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` are
            read, once, here (see ``ccag.bedrock.proxy``); ``os.environ`` if
            None.

    Raises:
        ConfigError: the proxy variable for this endpoint is unusable, or the
            endpoint's host cannot be put on a CONNECT line.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float,
        pool_size: int,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_seconds: float = MAX_IDLE_SECONDS,
        max_active: int = MAX_ACTIVE_CONNECTIONS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._max_idle_seconds = max_idle_seconds
        self._active_slots = trio.Semaphore(max_active)
        self._idle: collections.deque[Connection] = collections.deque()
        environ = os.environ if environ is None else environ
        self._proxy = _choose_proxy(endpoint, environ)
        # One trust store for Bedrock and for an https:// proxy alike: a
        # company CA added for one is what the other needs too.
        trust = ssl_context or _default_ssl_context()
        self._ssl_context: ssl.SSLContext | None = trust if endpoint.scheme == "https" else None
        self._proxy_ssl_context: ssl.SSLContext | None = None
        if self._proxy is not None and self._proxy.tls:
            self._proxy_ssl_context = trust
        self._connect_head = b""
        self._last_proxy_problem: str | None = None
        if self._proxy is not None:
            self._connect_head = connect_request(endpoint.host, endpoint.port, self._proxy)
        self.connections_opened = 0

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self, *, fresh: bool = False) -> Connection:
        """Lend out a connection: the newest live idle one, else a new one.

        Args:
            fresh: skip the idle connections (a retry after a stale one).

        Raises:
            UpstreamConnectError: the connection could not be made.
            UpstreamTimeout: connecting, or waiting for a free slot, took
                longer than the connect timeout.
        """
        try:
            # A free slot is the usual case: taking it without a yield spares
            # the request a wait behind every other ready task (time to first
            # byte under load); the connection's own I/O checkpoints next.
            self._active_slots.acquire_nowait()
        except trio.WouldBlock:
            await self._wait_for_slot()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

        try:
            if not fresh:
                connection = await self._take_idle()
                if connection is not None:
                    return connection
            return await self._connect()
        except BaseException:
            self._active_slots.release()
            raise

    async def _wait_for_slot(self) -> None:
        with trio.move_on_after(self._connect_timeout) as waiting:
            await self._active_slots.acquire()
        if waiting.cancelled_caught:
            raise UpstreamTimeout(
                f"no upstream connection slot free within {self._connect_timeout:g} s "
                f"({MAX_ACTIVE_CONNECTIONS} in use)",
                "pool",
            )

    async def release(self, connection: Connection) -> None:
        """Take a connection back after a request; keep it if it can be reused."""
        self._active_slots.release()
        if connection.can_be_reused() and len(self._idle) < self._pool_size:
            connection.start_next_request()
            connection.idle_since = trio.current_time()
            self._idle.append(connection)
            return
        await connection.aclose()

    async def discard(self, connection: Connection) -> None:
        """Take a connection back and close it (early exit, error, cancellation)."""
        self._active_slots.release()
        await connection.aclose()

    async def aclose(self) -> None:
        """Close every idle connection; lent ones close when they come back."""
        while self._idle:
            await self._idle.pop().aclose()

    async def _take_idle(self) -> Connection | None:
        oldest_allowed = trio.current_time() - self._max_idle_seconds
        while self._idle and self._idle[0].idle_since < oldest_allowed:
            await self._idle.popleft().aclose()

        while self._idle:
            connection = self._idle.pop()
            if not connection.is_dropped_by_peer():
                return connection
            await connection.aclose()
        return None

    async def _connect(self) -> Connection:
        endpoint = self._endpoint
        where = f"{endpoint.host}:{endpoint.port}"
        if self._proxy is not None:
            where = f"{where} through proxy {self._proxy.address}"
        try:
            # One deadline for all of it: TCP, the proxy's CONNECT, and TLS.
            with trio.fail_after(self._connect_timeout):
                if self._proxy is None:
                    tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                    stream: trio.abc.Stream = LeanSocketStream(tcp)
                    socket = tcp.socket
                else:
                    stream, socket = await self._open_tunnel(self._proxy)
                if self._ssl_context is None:
                    connection = Connection(stream, socket)
                else:
                    connection = await self._start_tls(stream, socket)
        except trio.TooSlowError as exc:
            raise UpstreamTimeout(
                f"connecting to {where} took longer than {self._connect_timeout:g} s", "connect"
            ) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise UpstreamConnectError(f"could not connect to {where}: {_describe(exc)}") from exc

        self.connections_opened += 1
        logger.debug("opened connection %d to %s", self.connections_opened, where)
        return connection

    async def _open_tunnel(self, proxy: Proxy) -> tuple[trio.abc.Stream, trio.socket.SocketType]:
        """TCP (and TLS, for an https:// proxy) to the proxy, then ``CONNECT``.

        Returns:
            The open tunnel, and the TCP socket under it.

        Raises:
            UpstreamConnectError: the proxy refused, closed, sent garbage, or
                failed the TLS handshake (its certificate included). The
                message names the proxy and its status line, never the
                credentials.
        """
        endpoint = self._endpoint
        tcp = await trio.open_tcp_stream(proxy.host, proxy.port)
        stream: trio.abc.Stream = LeanSocketStream(tcp)
        try:
            if self._proxy_ssl_context is not None:
                stream = await self._start_proxy_tls(stream, proxy, self._proxy_ssl_context)
            await stream.send_all(self._connect_head)
            reply = await _receive_proxy_reply(stream, proxy)
        except UpstreamConnectError as exc:
            await trio.aclose_forcefully(stream)
            self._log_proxy_problem(str(exc))
            raise
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

        target = f"{endpoint.host}:{endpoint.port}"
        problem = None
        if not reply.is_success:
            problem = (
                f"proxy {proxy.address} refused CONNECT {target}: {reply.status_line}"
            )
        elif reply.leftover:
            # Both TLS and HTTP/1.1 have the client speak first: bytes from
            # the tunnel before that are not from the endpoint.
            problem = (
                f"proxy {proxy.address} sent bytes ahead of the tunnel to {target}"
            )
        if problem is not None:
            await trio.aclose_forcefully(stream)
            self._log_proxy_problem(problem)
            raise UpstreamConnectError(problem)
        self._last_proxy_problem = None
        return stream, tcp.socket

    @staticmethod
    async def _start_proxy_tls(
        transport: trio.abc.Stream, proxy: Proxy, context: ssl.SSLContext
    ) -> trio.SSLStream[trio.abc.Stream]:
        """TLS to the proxy itself, its certificate checked against its host."""
        tls = trio.SSLStream(transport, context, server_hostname=proxy.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            # Said apart from a failed handshake with Bedrock inside the
            # tunnel: the fix (the proxy's certificate or the trust store)
            # is a different one.
            raise UpstreamConnectError(f"TLS to proxy {proxy.address} failed: {_describe(exc)}") from exc
        return tls

    def _log_proxy_problem(self, problem: str) -> None:
        # The client only learns "could not connect"; the operator has to fix
        # the proxy (credentials, allow list), so the reason is logged, once
        # per change rather than once per request.
        if problem != self._last_proxy_problem:
            logger.warning("%s", problem)
        else:
            logger.debug("%s", problem)
        self._last_proxy_problem = problem

    async def _start_tls(self, transport: trio.abc.Stream, socket: trio.socket.SocketType) -> Connection:
        """TLS to the endpoint over ``transport``: TCP, or a proxy's tunnel (maybe TLS itself)."""
        assert self._ssl_context is not None
        tls = trio.SSLStream(
            transport, self._ssl_context, server_hostname=self._endpoint.host, https_compatible=True
        )
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(transport)
            raise
        return Connection(tls, socket)


async def _receive_proxy_reply(stream: trio.abc.Stream, proxy: Proxy) -> ProxyReply:
    """Read the proxy's answer to CONNECT, up to the end of its head."""
    reader = ProxyReplyReader()
    while True:
        data = await stream.receive_some(RECEIVE_CHUNK_SIZE)
        if not data:
            raise UpstreamConnectError(
                f"proxy {proxy.address} closed the connection before answering CONNECT"
            )
        try:
            reply = reader.feed(data)
        except ProxyProtocolError as exc:
            raise UpstreamConnectError(f"proxy {proxy.address}: {exc}") from exc
        if reply is not None:
            return reply


def _choose_proxy(endpoint: Endpoint, environ: Mapping[str, str]) -> Proxy | None:
    """The endpoint's proxy, said once in the log at start-up."""
    proxy = proxy_for(endpoint.scheme, endpoint.host, endpoint.port, environ)
    if proxy is not None:
        logger.info(
            "%s: connecting through proxy %s (CONNECT tunnel)", endpoint.url, proxy.display
        )
    elif proxy_setting(endpoint.scheme, environ):
        logger.info("%s: connecting directly (NO_PROXY)", endpoint.url)
    return proxy


def _describe(exc: BaseException) -> str:
    """An exception's own words; trio's wrappers keep them in ``__cause__``."""
    while not str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _default_ssl_context() -> ssl.SSLContext:
    """Certificate and host name checks against the system trust store."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context
