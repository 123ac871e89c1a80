"""A small HTTP/1.1 client for search providers: one request per connection.

Searches are a few per conversation turn, so connections are not pooled:
each call opens TCP (and TLS for ``https``), sends one request with
``Connection: close``, reads the whole bounded answer and closes. The whole
exchange runs under one deadline; every failure becomes
:class:`~ccag.websearch.providers.base.SearchFailed` (``unavailable``), so
the caller has one thing to catch.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import attrs
import h11
import trio

from ccag import __version__
from ccag.websearch.providers.base import HttpRequest, SearchFailed

# A results page is tens of KiB (DuckDuckGo's HTML is the largest); more
# than this is not a search answer, and reading it would only cost memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024

RECEIVE_CHUNK_SIZE = 64 * 1024

USER_AGENT = f"ccag/{__version__}"


@attrs.frozen
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def fetch(
    request: HttpRequest,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> HttpResponse:
    """Send ``request`` and read the whole response within ``timeout`` seconds.

    Raises:
        SearchFailed: bad URL, connect or TLS failure, timeout, a malformed or
            oversized response.
    """
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SearchFailed(f"the search URL {request.url!r} is not an http(s) URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]

    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            try:
                if parts.scheme == "https":
                    context = ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(
                        stream, context, server_hostname=host, https_compatible=True
                    )
                    await stream.do_handshake()
                return await _exchange(stream, request, target, host_header, max_bytes)
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError:
        raise SearchFailed(
            f"the search service did not answer within {timeout:g} s"
        ) from None
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise SearchFailed(f"the search service could not be reached: {exc}") from None
    except h11.ProtocolError as exc:
        raise SearchFailed(
            f"the search service sent a malformed response: {exc}"
        ) from None


async def _exchange(
    stream: trio.abc.Stream,
    request: HttpRequest,
    target: str,
    host: str,
    max_bytes: int,
) -> HttpResponse:
    connection = h11.Connection(h11.CLIENT)
    headers = [
        ("host", host),
        ("user-agent", USER_AGENT),
        ("accept-encoding", "identity"),
        ("connection", "close"),
    ]
    names = {name for name, _ in headers}
    for name, value in request.headers:
        if name in names:
            headers = [(key, old) for key, old in headers if key != name]
        headers.append((name, value))
    if request.method != "GET" or request.body:
        headers.append(("content-length", str(len(request.body))))

    out = connection.send(
        h11.Request(method=request.method, target=target, headers=headers)
    )
    out += connection.send(h11.Data(data=request.body)) if request.body else b""
    out += connection.send(h11.EndOfMessage())
    await stream.send_all(out)

    status = 0
    response_headers: tuple[tuple[str, str], ...] = ()
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(
                bytes(await stream.receive_some(RECEIVE_CHUNK_SIZE))
            )
        elif isinstance(event, h11.Response):
            status = event.status_code
            response_headers = tuple(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in event.headers
            )
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_bytes:
                raise SearchFailed(
                    f"the search service's answer is larger than {max_bytes} bytes"
                )
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            if status == 0:
                raise SearchFailed(
                    "the search service closed the connection without answering"
                )
            return HttpResponse(status, response_headers, bytes(body))
