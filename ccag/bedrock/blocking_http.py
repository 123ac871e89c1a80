"""Blocking HTTP connections for the control-plane calls, through the proxy if set.

Model discovery (ListInferenceProfiles) and STS AssumeRole are rare, small
calls made with the standard library's ``http.client`` in a worker thread.
They honour the same ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` choice
as the Bedrock Runtime pool (:func:`ccag.bedrock.proxy.proxy_for`), from the
same environment mapping, and, like the pool, reach every endpoint through
a ``CONNECT`` tunnel, ``http`` ones included. ``http.client`` opens the
tunnel (``set_tunnel``) and then runs TLS inside it with the certificate
checked against the real host, not the proxy's.

The proxy's credentials travel only in the CONNECT request's
``Proxy-Authorization`` header; messages name the proxy by ``host:port``.
"""

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Mapping

import attrs

from ccag.bedrock.proxy import Proxy, proxy_for

logger = logging.getLogger(__name__)

# Default ports of the two schemes, for NO_PROXY matching and CONNECT.
DEFAULT_PORTS = {"http": 80, "https": 443}

# The longest error text quoted from a failed connection: a proxy's reason
# phrase ends up in it, and a hostile proxy could send a long one.
MAX_FAILURE_TEXT = 300

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
            ConfigError: the proxy variable holds an unusable URL (the
                message masks its credentials).
        """
        port = DEFAULT_PORTS[scheme] if port is None else port
        proxy = proxy_for(scheme, host, port, environ)
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
        if self.proxy is None:
            host, port = self.host, self.port
        else:
            host, port = self.proxy.host, self.proxy.port

        connection: http.client.HTTPConnection
        if self.scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)

        if self.proxy is not None:
            # TODO: Python 3.11's http.client writes an IPv6 target unbracketed
            # on the CONNECT line (fixed in 3.12), so an endpoint given as an
            # IPv6 literal cannot be reached through a proxy. It also takes
            # only a 200 as an open tunnel, so a proxy answering another 2xx
            # (which the pool accepts) fails these calls as a refusal.
            headers = {}
            if self.proxy.authorization is not None:
                headers["Proxy-Authorization"] = self.proxy.authorization
            connection.set_tunnel(self.host, self.port, headers=headers)
        return connection


def failure_text(exc: BaseException) -> str:
    """An exception's text, safe to log: printable and bounded.

    A refused tunnel reads ``Tunnel connection failed: 407 <reason>``, the
    reason phrase being the proxy's own words.
    """
    text = str(exc) or type(exc).__name__
    return "".join(char if char in _PRINTABLE else "?" for char in text[:MAX_FAILURE_TEXT])
