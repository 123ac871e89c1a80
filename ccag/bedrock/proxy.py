"""Reaching Bedrock through an HTTP proxy: choosing it, and the CONNECT talk.

Pure: the environment is handed in, bytes go in and out; the pool does the
I/O. The choice follows what botocore does on Linux, so a team's usual
environment works unchanged:

* ``https_proxy`` / ``HTTPS_PROXY`` for an ``https`` endpoint,
  ``http_proxy`` / ``HTTP_PROXY`` for an ``http`` one; the lower-case name
  wins when both are set, and an empty lower-case value means "no proxy"
  (as in ``urllib.request.getproxies_environment``, which reads
  ``os.environ`` itself and so cannot be handed our mapping).
* ``no_proxy`` / ``NO_PROXY`` is matched by
  ``urllib.request.proxy_bypass_environment``, the function botocore's own
  check ends in: ``*`` alone bypasses every host; otherwise a comma-separated
  list of host names, domain suffixes (with or without a leading dot), IP
  addresses written out, or ``host:port``. Loopback is not bypassed unless
  listed, and address ranges (CIDR) are not understood.
* A proxy URL without a scheme is an ``http://`` one; its port defaults to 80.
  An ``https://`` proxy URL means TLS to the proxy itself (port 443 by
  default), checked against the proxy's host name; the tunnel's own TLS to
  Bedrock then runs inside that TLS session.

Every connection, to an ``https`` or a plain ``http`` endpoint, goes through
a ``CONNECT`` tunnel: one code path, and TLS runs end to end with the
certificate checked against the Bedrock host. Some proxies refuse CONNECT to
port 80; an ``http`` endpoint (a stand-in such as the simulator) behind such
a proxy is then unreachable and the refusal is reported as a connect error.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

# Undocumented and so missing from typeshed, but present since Python 2: it
# is what ``urllib.request.proxy_bypass`` runs on Linux, and so what botocore
# runs. Reusing it keeps our NO_PROXY matching the same as the SDKs'.
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import attrs

from ccag.errors import ConfigError, ProtocolError

# The largest proxy response head read before the tunnel is used. A CONNECT
# answer is a status line and a few headers; the bound only stops a broken
# or hostile proxy from growing the buffer without end.
MAX_PROXY_RESPONSE_HEAD_BYTES = 16 * 1024

# The port of a proxy URL that names none (urllib3's and botocore's default).
DEFAULT_PROXY_PORT = 80

# The same for an ``https://`` proxy URL: the scheme's port, as urllib3 does.
DEFAULT_TLS_PROXY_PORT = 443

# Characters kept as they are when a status line from a proxy is quoted in
# an error message; anything else (control characters) becomes ``?`` so a
# proxy cannot forge log lines.
_PRINTABLE = frozenset(range(0x20, 0x7F))


class ProxyProtocolError(ProtocolError):
    """A proxy's answer to CONNECT is not an HTTP/1.x response head."""


@attrs.frozen
class Proxy:
    """An HTTP proxy to tunnel through.

    Attributes:
        host: the proxy's host name or address (IPv6 without brackets).
        port: its TCP port.
        authorization: the ``Proxy-Authorization`` value when the URL had
            credentials, else None. Never logged.
        display: the URL with the password masked, for logs and messages.
        tls: whether the proxy itself is spoken to over TLS (an ``https://``
            proxy URL), its certificate checked against ``host``.
    """

    host: str
    port: int
    authorization: str | None = attrs.field(default=None, repr=False)
    display: str = ""
    tls: bool = False

    @property
    def address(self) -> str:
        """``host:port`` as it appears in messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_proxy_url(value: str) -> Proxy:
    """Read a proxy URL such as ``http://user:pass@proxy.corp:3128``.

    Raises:
        ConfigError: not an ``http://`` or ``https://`` URL with a host and a
            valid port.
    """
    # A bare host:port is common in the wild (curl and botocore accept it).
    if value.startswith("//"):
        value = "http:" + value
    elif "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
    except ValueError:
        # Not quoted back: the URL may hold a password.
        raise ConfigError("a proxy URL is malformed") from None
    shown = _masked(value)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"proxy {shown}: only http:// and https:// proxies are supported")
    if not parts.hostname:
        raise ConfigError(f"proxy {shown}: no host")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (DEFAULT_TLS_PROXY_PORT if tls else DEFAULT_PROXY_PORT)
    except ValueError as exc:
        raise ConfigError(f"proxy {shown}: {exc}") from None

    authorization = None
    if parts.username is not None:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode()).decode("ascii")
    return Proxy(parts.hostname, port, authorization, shown, tls)


def proxy_for(
    scheme: str, host: str, port: int, environ: Mapping[str, str]
) -> Proxy | None:
    """The proxy to reach ``scheme://host:port`` through, or None for direct.

    Args:
        scheme: ``http`` or ``https``, the endpoint's scheme.
        host: the endpoint's host (IPv6 without brackets).
        port: the endpoint's port.
        environ: the process environment (or a stand-in in tests).

    Raises:
        ConfigError: the proxy variable holds an unusable URL.
    """
    value = proxy_setting(scheme, environ)
    if not value:
        return None

    no_proxy = _lookup(environ, "no_proxy")
    if no_proxy:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if proxy_bypass_environment(netloc, {"no": no_proxy}):
            return None
    return parse_proxy_url(value)


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    """The ``CONNECT`` request head that opens a tunnel to ``host:port``.

    Raises:
        ConfigError: the host could not be put on a request line (it holds
            whitespace or control characters).
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if any(ord(char) not in _PRINTABLE or char == " " for char in authority):
        raise ConfigError(f"endpoint host {host!r} cannot be sent to a proxy")
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@attrs.frozen
class ProxyReply:
    """The head of a proxy's final answer to CONNECT.

    Attributes:
        status: the status code.
        status_line: the status line, safe to log (control characters
            replaced).
        leftover: bytes received after the head: for a 2xx answer, the first
            bytes from inside the tunnel.
    """

    status: int
    status_line: str
    leftover: bytes

    @property
    def is_success(self) -> bool:
        """Whether the tunnel is open (any 2xx, as RFC 9110 section 9.3.6 says)."""
        return 200 <= self.status < 300


class ProxyReplyReader:
    """Reads a proxy's response head from bytes as they arrive.

    Interim (1xx) heads are skipped. Lines may end in CRLF or a bare LF
    (RFC 9112 section 2.2 lets a recipient accept the latter). Header fields
    are not interpreted: only the status decides, and the body of a refusal
    is never read.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        # Where the next line starts (heads so far stay in the buffer), and
        # the current head's status line (None until it has been read).
        self._line_start = 0
        self._status: tuple[int, str] | None = None

    def feed(self, data: bytes | bytearray) -> ProxyReply | None:
        """Add received bytes; the reply once its head is complete.

        Raises:
            ProxyProtocolError: the bytes are not an HTTP/1.x response head,
                or the head is longer than
                :data:`MAX_PROXY_RESPONSE_HEAD_BYTES`.
        """
        self._buffer += data
        while True:
            line_end = self._buffer.find(b"\n", self._line_start)
            if line_end < 0:
                break
            if line_end + 1 > MAX_PROXY_RESPONSE_HEAD_BYTES:
                raise ProxyProtocolError("the proxy's response head is too long")

            line = bytes(self._buffer[self._line_start : line_end]).removesuffix(b"\r")
            self._line_start = line_end + 1
            if self._status is None:
                self._status = _parse_status_line(line)
            elif not line:
                reply = self._end_of_head(self._status)
                if reply is not None:
                    return reply

        if len(self._buffer) >= MAX_PROXY_RESPONSE_HEAD_BYTES:
            raise ProxyProtocolError("the proxy's response head is too long")
        return None

    def _end_of_head(self, status: tuple[int, str]) -> ProxyReply | None:
        # Interim heads stay in the buffer, so the bound covers them too.
        code, status_line = status
        self._status = None
        if 100 <= code < 200:
            return None
        return ProxyReply(code, status_line, bytes(self._buffer[self._line_start :]))


def _parse_status_line(line: bytes) -> tuple[int, str]:
    """``HTTP/1.1 200 Connection established`` -> (200, the line)."""
    shown = "".join(chr(byte) if byte in _PRINTABLE else "?" for byte in line[:200])
    version, _, rest = line.partition(b" ")
    code, _, _reason = rest.partition(b" ")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise ProxyProtocolError(f"the proxy did not answer in HTTP/1.x: {shown!r}")
    if len(code) != 3 or not code.isdigit():
        raise ProxyProtocolError(f"the proxy sent a malformed status line: {shown!r}")
    return int(code), shown


def proxy_setting(scheme: str, environ: Mapping[str, str]) -> str | None:
    """The proxy URL set for ``scheme`` endpoints, before NO_PROXY; "" or None if none."""
    return _lookup(environ, f"{scheme}_proxy")


def _lookup(environ: Mapping[str, str], lower_name: str) -> str | None:
    """A proxy variable: the lower-case name wins, even when empty."""
    if lower_name in environ:
        return environ[lower_name]
    return environ.get(lower_name.upper())


def _masked(url: str) -> str:
    """``url`` with its credentials (a user name may be a token) as ``***``."""
    parts = urlsplit(url)
    _userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    return parts._replace(netloc=f"***@{host}").geturl()
