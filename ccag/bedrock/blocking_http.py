"""Blocking HTTP connections for the control-plane calls, through the proxy if set.

Model discovery (ListInferenceProfiles) and STS AssumeRole are rare, small
calls made with the standard library's ``http.client`` in a worker thread.
They honour the same ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` choice
as the Bedrock Runtime pool (:func:`ccag.bedrock.proxy.proxy_for`), from the
same environment mapping, and, like the pool, reach every endpoint through
a ``CONNECT`` tunnel, ``http`` ones included, with TLS inside it checked
against the real host, not the proxy's.

The tunnel is opened here rather than by ``http.client``'s ``set_tunnel``:
Python 3.11's writes an IPv6 target unbracketed (``CONNECT ::1:443``, which
proxies refuse or misread; fixed in 3.12) and takes only a 200 as an open
tunnel. Ours sends the pool's CONNECT head and reads the answer with the
pool's reader (``ccag.bedrock.proxy``), so both paths say the same thing.

An ``https://`` proxy (TLS to the proxy itself) is refused here:
``ssl.SSLSocket`` cannot run a second TLS session inside a first, so these
calls would need a TLS stack of their own for it.

The proxy's credentials travel only in the CONNECT request's
``Proxy-Authorization`` header; messages name the proxy by ``host:port``.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from collections.abc import Mapping

import attrs

from ccag.bedrock.proxy import (
    Proxy,
    ProxyProtocolError,
    ProxyReplyReader,
    connect_request,
    proxy_for,
)
from ccag.errors import ConfigError

logger = logging.getLogger(__name__)

# Default ports of the two schemes, for NO_PROXY matching and CONNECT.
DEFAULT_PORTS = {"http": 80, "https": 443}

# The longest error text quoted from a failed connection: a proxy's reason
# phrase ends up in it, and a hostile proxy could send a long one.
MAX_FAILURE_TEXT = 300

# One read of the proxy's answer to CONNECT. The reader bounds the whole head
# (MAX_PROXY_RESPONSE_HEAD_BYTES); this only sizes each recv.
PROXY_RECEIVE_SIZE = 4096

# Characters kept as they are in quoted error text; the rest become ``?`` so
# a proxy's reason phrase cannot forge log lines.
_PRINTABLE = frozenset(chr(code) for code in range(0x20, 0x7F))


@attrs.frozen
class BlockingTarget:
    """Where a blocking call connects: the host, and the proxy on the way.

    Attributes:
        scheme: ``http`` or ``https``.
        host: the host name or address (IPv6 without brackets).
        port: the TCP port.
        proxy: the proxy to tunnel through, or None to connect directly.
    """

    scheme: str
    host: str
    port: int
    proxy: Proxy | None

    @classmethod
    def choose(
        cls, scheme: str, host: str, port: int | None, environ: Mapping[str, str]
    ) -> BlockingTarget:
        """The target for ``scheme://host:port`` under ``environ``'s proxy settings.

        Args:
            scheme: ``http`` or ``https``.
            host: the host (IPv6 without brackets).
            port: the port, or None for the scheme's default.
            environ: where the proxy variables are read.

        Raises:
            ConfigError: the proxy variable holds an unusable URL, or an
                ``https://`` one (the message masks its credentials).
        """
        port = DEFAULT_PORTS[scheme] if port is None else port
        proxy = proxy_for(scheme, host, port, environ)
        if proxy is not None and proxy.tls:
            raise ConfigError(
                f"proxy {proxy.display}: only http:// proxies are supported for model discovery "
                "and STS (http.client cannot run TLS to AWS inside TLS to the proxy)"
            )
        if proxy is not None:
            logger.debug("%s://%s:%d: through proxy %s", scheme, host, port, proxy.display)
        return cls(scheme, host, port, proxy)

    def describe(self, shown: str) -> str:
        """``shown`` (how the caller names the host), plus the proxy if any."""
        if self.proxy is None:
            return shown
        return f"{shown} through proxy {self.proxy.address}"

    def connection(
        self, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> http.client.HTTPConnection:
        """A new, not yet connected connection; the first request connects it.

        Args:
            timeout: seconds for each socket operation: connecting (to the
                proxy when there is one), the proxy's answer, TLS, reads.
            ssl_context: for ``https``; the default context (system CAs,
                host name checked) when None.
        """
        if self.proxy is not None:
            return TunnelledConnection(self.host, self.port, self.proxy, timeout, self._tls(ssl_context))
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _tls(self, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
        """The context for TLS inside the tunnel; None for an ``http`` target."""
        if self.scheme != "https":
            return None
        return ssl_context or ssl.create_default_context()


class TunnelledConnection(http.client.HTTPConnection):
    """An ``http.client`` connection that reaches its host through a CONNECT tunnel.

    ``host`` and ``port`` are the target's, so the ``Host`` header and the
    TLS check name it; only :meth:`connect` knows the proxy.

    Args:
        host: the target host (IPv6 without brackets).
        port: the target port.
        proxy: the (plain ``http://``) proxy to tunnel through.
        timeout: seconds for each socket operation.
        ssl_context: TLS inside the tunnel, or None for plain HTTP.
    """

    def __init__(
        self, host: str, port: int, proxy: Proxy, timeout: float, ssl_context: ssl.SSLContext | None
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        # The Host header leaves out the scheme's default port, as
        # HTTPSConnection's does: signed requests name the host that way.
        self.default_port = http.client.HTTPS_PORT if ssl_context is not None else http.client.HTTP_PORT
        self._proxy = proxy
        self._ssl_context = ssl_context

    def connect(self) -> None:
        """TCP to the proxy, CONNECT to the target, then TLS if asked.

        Raises:
            OSError: the proxy cannot be reached, refuses (the message quotes
                its status line, never the credentials), or TLS fails.
        """
        raw = socket.create_connection((self._proxy.host, self._proxy.port), self.timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The pool's CONNECT head: the IPv6 target in brackets.
            try:
                head = connect_request(self.host, self.port, self._proxy)
            except ConfigError as exc:
                raise OSError(str(exc)) from None
            raw.sendall(head)
            _read_tunnel_answer(raw)
            if self._ssl_context is not None:
                self.sock = self._ssl_context.wrap_socket(raw, server_hostname=self.host)
            else:
                self.sock = raw
        except BaseException:
            raw.close()
            raise


def _read_tunnel_answer(raw: socket.socket) -> None:
    """Read the proxy's answer to CONNECT; return once the tunnel is open."""
    reader = ProxyReplyReader()
    while True:
        data = raw.recv(PROXY_RECEIVE_SIZE)
        if not data:
            raise OSError("the proxy closed the connection before answering CONNECT")
        try:
            reply = reader.feed(data)
        except ProxyProtocolError as exc:
            raise OSError(str(exc)) from None
        if reply is None:
            continue
        if not reply.is_success:
            raise OSError(f"Tunnel connection failed: {reply.status_line}")
        if reply.leftover:
            # TLS and HTTP/1.1 both have the client speak first: bytes from
            # the tunnel before that are not from the target.
            raise OSError("the proxy sent bytes ahead of the tunnel")
        return


def failure_text(exc: BaseException) -> str:
    """An exception's text, safe to log: printable and bounded.

    A refused tunnel reads ``Tunnel connection failed: HTTP/1.1 407
    <reason>``, the reason phrase being the proxy's own words.
    """
    text = str(exc) or type(exc).__name__
    return "".join(char if char in _PRINTABLE else "?" for char in text[:MAX_FAILURE_TEXT])
