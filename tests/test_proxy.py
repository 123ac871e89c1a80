"""Reaching Bedrock through an HTTP proxy (HTTPS_PROXY / HTTP_PROXY / NO_PROXY).

The sans-IO part (choosing the proxy, the CONNECT head, reading the proxy's
answer) is tested on its own, with Hypothesis for the reader. The shell is
tested on 127.0.0.1 with a small CONNECT proxy written here, in front of a
TLS fake upstream (a trustme CA, a certificate for ``localhost``) and of the
bundled simulator behind a whole gateway.
"""

from __future__ import annotations

import base64
import functools
import logging
import ssl

import attrs
import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

from ccag.bedrock.client import BedrockClient
from ccag.bedrock.credentials import CredentialSource
from ccag.bedrock.errors import UpstreamConnectError, UpstreamTimeout
from ccag.bedrock.proxy import (
    MAX_PROXY_RESPONSE_HEAD_BYTES,
    ProxyProtocolError,
    ProxyReply,
    ProxyReplyReader,
    connect_request,
    parse_proxy_url,
    proxy_for,
)
from ccag.errors import ConfigError
from tests.e2e_client import assert_error, message_body, post_messages
from tests.gateway_fixture import open_gateway
from tests.upstream_fakes import open_fake_upstream

TIMEOUT = 10
READ_SIZE = 65536
PROXY_USER = "team-a"
PROXY_PASSWORD = "s3cret-proxy-pass"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


# -- choosing the proxy -------------------------------------------------------

HOST = "bedrock-runtime.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("scheme", "environ", "expected"),
    [
        ("https", {"HTTPS_PROXY": "http://upper:3128"}, "upper"),
        ("https", {"https_proxy": "http://lower:3128"}, "lower"),
        ("https", {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1"}, "lower"),
        ("https", {"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}, None),
        ("https", {"HTTP_PROXY": "http://plain:3128"}, None),
        ("http", {"HTTP_PROXY": "http://plain:3128"}, "plain"),
        ("http", {"HTTPS_PROXY": "http://secure:3128"}, None),
        ("https", {}, None),
    ],
)
def test_proxy_for_reads_the_variable_of_the_endpoint_scheme(
    scheme: str, environ: dict[str, str], expected: str | None
) -> None:
    proxy = proxy_for(scheme, HOST, 443, environ)

    assert (proxy.host if proxy else None) == expected


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        (HOST, 443, "*", True),
        (HOST, 443, HOST, True),
        (HOST, 443, "amazonaws.com", True),
        (HOST, 443, ".amazonaws.com", True),
        (HOST, 443, "example.com, .AMAZONAWS.com", True),
        (HOST, 443, "s.amazonaws.com", False),
        (HOST, 443, f"{HOST}:443", True),
        (HOST, 443, f"{HOST}:8443", False),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("127.0.0.1", 443, "example.com", False),
        ("127.0.0.1", 443, "", False),
        ("localhost", 443, "localhost", True),
    ],
)
def test_proxy_for_honours_no_proxy(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        environ = {"HTTPS_PROXY": "http://proxy.corp:3128", name: no_proxy}

        proxy = proxy_for("https", host, port, environ)

        assert (proxy is None) is bypassed, name


def test_proxy_for_prefers_lower_case_no_proxy() -> None:
    environ = {"HTTPS_PROXY": "proxy:3128", "NO_PROXY": HOST, "no_proxy": "example.com"}

    assert proxy_for("https", HOST, 443, environ) is not None


def test_parse_proxy_url_defaults_the_scheme_and_port_and_masks_credentials() -> None:
    bare = parse_proxy_url("proxy.corp")
    with_credentials = parse_proxy_url(f"http://{PROXY_USER}:{PROXY_PASSWORD}@10.0.0.5:3128")

    assert (bare.host, bare.port, bare.authorization) == ("proxy.corp", 80, None)
    assert with_credentials.address == "10.0.0.5:3128"
    assert with_credentials.display == "http://***@10.0.0.5:3128"
    assert PROXY_PASSWORD not in repr(with_credentials)


@pytest.mark.parametrize(
    "value",
    [
        "socks5://proxy.corp:1080",
        "http://",
        "http://p:99999",
        f"http://u:{PROXY_PASSWORD}@[::1",
    ],
)
def test_parse_proxy_url_refuses_what_it_cannot_use(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_proxy_url(value)

    assert PROXY_PASSWORD not in str(caught.value)


def test_connect_request_names_the_endpoint_and_carries_basic_credentials() -> None:
    proxy = parse_proxy_url("http://us%40er:p%3Ass@proxy.corp:3128")

    head = connect_request(HOST, 443, proxy)

    assert head == (
        f"CONNECT {HOST}:443 HTTP/1.1\r\n"
        f"Host: {HOST}:443\r\n"
        f"Proxy-Authorization: Basic {base64.b64encode(b'us@er:p:ss').decode()}\r\n\r\n"
    ).encode()


def test_connect_request_brackets_ipv6_and_sends_no_credentials_it_has_not() -> None:
    head = connect_request("::1", 8443, parse_proxy_url("http://proxy.corp:3128"))

    assert head == b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"


# -- reading the proxy's answer -------------------------------------------------


def test_reader_returns_the_status_and_the_bytes_after_the_head() -> None:
    reader = ProxyReplyReader()

    first = reader.feed(b"HTTP/1.1 200 Connection established\r\nVia: 1.1 sq")
    second = reader.feed(b"uid\r\n\r\nTLS")

    assert first is None
    assert second == ProxyReply(200, "HTTP/1.1 200 Connection established", b"TLS")
    assert second.is_success


def test_reader_skips_interim_heads_and_accepts_bare_lf() -> None:
    reply = ProxyReplyReader().feed(b"HTTP/1.1 100 Continue\n\nHTTP/1.0 407 Auth\nA: b\n\n")

    assert reply == ProxyReply(407, "HTTP/1.0 407 Auth", b"")
    assert not reply.is_success


@pytest.mark.parametrize(
    "data",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 2000 OK\r\n", b"\r\n"],
)
def test_reader_refuses_what_is_not_an_http1_status_line(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        ProxyReplyReader().feed(data)


def test_reader_bounds_the_head() -> None:
    reader = ProxyReplyReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n")

    with pytest.raises(ProxyProtocolError, match="too long"):
        for _ in range(MAX_PROXY_RESPONSE_HEAD_BYTES // 16):
            reader.feed(b"X-Pad: 123456\r\n\x00")


def test_reader_quotes_control_characters_safely() -> None:
    reply = ProxyReplyReader().feed(b"HTTP/1.1 403 No\x1b[31m\r\n\r\n")

    assert reply is not None
    assert reply.status_line == "HTTP/1.1 403 No?[31m"


def outcome(chunks: list[bytes]) -> ProxyReply | str:
    """What the reader makes of ``chunks``: a reply, "more", or "error"."""
    reader = ProxyReplyReader()
    try:
        for chunk in chunks:
            reply = reader.feed(chunk)
            if reply is not None:
                return reply
    except ProxyProtocolError:
        return "error"
    return "more"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


HEAD_PARTS = st.lists(
    st.sampled_from(
        [b"HTTP/1.1 ", b"HTTP/1.0 ", b"200", b"407", b"100", b" OK", b"\r\n", b"\n", b"A: b"]
    ),
    max_size=12,
)


@given(data=st.one_of(st.binary(max_size=300), HEAD_PARTS.map(b"".join)), cuts=st.lists(st.integers(0, 400)))
def test_reader_any_bytes_whole_or_split_give_one_answer(data: bytes, cuts: list[int]) -> None:
    whole = outcome([data])
    pieces = outcome(split(data, cuts))
    one_by_one = outcome([data[i : i + 1] for i in range(len(data))])

    assert whole == pieces == one_by_one


@given(status=st.integers(100, 999), reason=st.binary(max_size=40), extra=st.binary(max_size=40))
def test_reader_reads_any_final_status(status: int, reason: bytes, extra: bytes) -> None:
    reason = reason.replace(b"\n", b"")
    head = b"HTTP/1.1 %d %s\r\nServer: p\r\n\r\n" % (status, reason)
    reply = outcome([head + extra])

    if status < 200:
        # An interim head is skipped: what follows decides.
        assert reply == outcome([extra])
    else:
        assert isinstance(reply, ProxyReply)
        assert (reply.status, reply.leftover) == (status, extra)


# -- a CONNECT proxy on 127.0.0.1 ------------------------------------------------


@attrs.define
class FakeProxy:
    """Answers CONNECT with ``answer`` then pipes bytes to 127.0.0.1:<port>.

    ``answer`` of None never answers (a hung proxy). Only a 2xx answer opens a
    tunnel; the target's port is used, its host is always 127.0.0.1.
    """

    answer: bytes | None = ESTABLISHED
    port: int = 0
    heads: list[bytes] = attrs.Factory(list)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            head, leftover = await _read_head(client)
            self.heads.append(head)
            if self.answer is None:
                await trio.sleep_forever()
            await client.send_all(self.answer)
            if not self.answer.startswith(b"HTTP/1.1 2"):
                return
            target_port = int(head.split(b" ")[1].rpartition(b":")[2])
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            async with upstream:
                await upstream.send_all(leftover)
                await _pipe_both_ways(client, upstream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(client)


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise trio.BrokenResourceError("closed before the CONNECT head ended")
        buffer += data
    head, _, leftover = buffer.partition(b"\r\n\r\n")
    return head, leftover


async def _pipe_both_ways(a: trio.SocketStream, b: trio.SocketStream) -> None:
    async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(READ_SIZE):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe, a, b)
        nursery.start_soon(pipe, b, a)


async def open_fake_proxy(nursery: trio.Nursery, answer: bytes | None = ESTABLISHED) -> FakeProxy:
    proxy = FakeProxy(answer)
    await nursery.start(functools.partial(proxy.serve))
    return proxy


def header_of(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def static_credentials() -> CredentialSource:
    return CredentialSource.static("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a cert for ``localhost``, and a client trusting it."""
    authority = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


async def post_twice(client: BedrockClient) -> list[tuple[int, bytes]]:
    results = []
    for _ in range(2):
        async with client.post("/model/m/invoke", b'{"a":1}', headers=JSON_HEADERS) as response:
            results.append((response.status, await response.read_all(1 << 20)))
    return results


# -- the pool through the proxy ---------------------------------------------------


async def test_tls_goes_through_the_proxy_with_credentials_that_never_reach_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_context, client_context = tls_contexts()
    caplog.set_level(logging.DEBUG)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            upstream = await open_fake_upstream(nursery, ssl_context=server_context)
            proxy = await open_fake_proxy(nursery)
            proxy_url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
            client = BedrockClient(
                f"https://localhost:{upstream.port}",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                ssl_context=client_context,
                environ={"HTTPS_PROXY": proxy_url},
            )
            results = await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert results == [(200, b'{"ok":true}')] * 2
    # One tunnel, kept alive for both requests; TLS checked against localhost.
    assert [head.split(b"\r\n")[0] for head in proxy.heads] == [
        f"CONNECT localhost:{upstream.port} HTTP/1.1".encode()
    ]
    expected = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode())
    assert header_of(proxy.heads[0], b"proxy-authorization") == b"Basic " + expected
    assert [request.header("host") for request in upstream.requests] == [
        f"localhost:{upstream.port}"
    ] * 2
    assert f"through proxy http://***@127.0.0.1:{proxy.port}" in caplog.text
    assert PROXY_PASSWORD not in caplog.text
    assert expected.decode() not in caplog.text


async def test_tls_through_the_proxy_checks_the_certificate_of_the_bedrock_host() -> None:
    server_context, client_context = tls_contexts()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            upstream = await open_fake_upstream(nursery, ssl_context=server_context)
            proxy = await open_fake_proxy(nursery)
            # The certificate is for localhost, the endpoint is 127.0.0.1.
            client = BedrockClient(
                f"https://127.0.0.1:{upstream.port}",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                ssl_context=client_context,
                environ={"HTTPS_PROXY": proxy.url},
            )
            with pytest.raises(UpstreamConnectError, match="certificate"):
                await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert len(proxy.heads) == 1


async def test_no_proxy_sends_a_matching_host_directly() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            upstream = await open_fake_upstream(nursery)
            proxy = await open_fake_proxy(nursery)
            client = BedrockClient(
                f"http://127.0.0.1:{upstream.port}",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                environ={"HTTP_PROXY": proxy.url, "NO_PROXY": "example.com,127.0.0.1"},
            )
            results = await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert results == [(200, b'{"ok":true}')] * 2
    assert proxy.heads == []
    assert upstream.connections_accepted == 1


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", "407"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "403 Forbidden"),
        (b"HTTP/1.0 502 Bad Gateway\r\n\r\n<html>", "502 Bad Gateway"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\n", "closed"),
        (b"", "closed"),
        (ESTABLISHED + b"surprise", "ahead of the tunnel"),
    ],
)
async def test_a_proxy_that_does_not_open_the_tunnel_is_a_connect_error(
    answer: bytes, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def answer_and_close(stream: trio.SocketStream) -> None:
        await _read_head(stream)
        await stream.send_all(answer)
        await trio.aclose_forcefully(stream)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, answer_and_close, 0, host="127.0.0.1")
            )
            proxy_port = listeners[0].socket.getsockname()[1]
            proxy_url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy_port}"
            client = BedrockClient(
                "https://localhost:1",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                environ={"HTTPS_PROXY": proxy_url},
            )
            with pytest.raises(UpstreamConnectError) as caught:
                await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    message = str(caught.value)
    assert f"127.0.0.1:{proxy_port}" in message
    assert words in message
    assert PROXY_PASSWORD not in message + caplog.text


async def test_a_refusing_proxy_is_logged_once_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusal = b"HTTP/1.1 403 Forbidden\r\n\r\n"

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery, answer=refusal)
            client = BedrockClient(
                "https://localhost:1",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                environ={"HTTPS_PROXY": proxy.url},
            )
            for _ in range(3):
                with pytest.raises(UpstreamConnectError):
                    await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(proxy.heads) == 3
    assert warnings == [
        f"proxy 127.0.0.1:{proxy.port} refused CONNECT localhost:1: HTTP/1.1 403 Forbidden"
    ]


async def test_a_hung_proxy_times_out_within_the_connect_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery, answer=None)
            client = BedrockClient(
                "https://localhost:1",
                "us-east-1",
                static_credentials(),
                connect_timeout=0.3,
                environ={"HTTPS_PROXY": proxy.url},
            )
            started = trio.current_time()
            with pytest.raises(UpstreamTimeout) as caught:
                await post_twice(client)
            waited = trio.current_time() - started
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert caught.value.phase == "connect"
    assert f"through proxy 127.0.0.1:{proxy.port}" in str(caught.value)
    assert 0.3 <= waited < 2


def test_an_unusable_proxy_setting_stops_the_client_being_built() -> None:
    with pytest.raises(ConfigError, match="only http://"):
        BedrockClient(
            "https://localhost:1",
            "us-east-1",
            static_credentials(),
            environ={"HTTPS_PROXY": "socks5://proxy.corp:1080"},
        )


# -- the gateway, its environment, the simulator --------------------------------


async def test_gateway_reaches_the_simulator_through_http_proxy(tmp_path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery)
            async with open_gateway(tmp_path, environ={"HTTP_PROXY": proxy.url}) as running:
                reply = await post_messages(running.port, running.key, message_body())
                simulator_port = int(running.simulator.url.rpartition(":")[2])
                model_requests = len(running.simulator.model_requests())
            nursery.cancel_scope.cancel()

    assert reply.status == 200, reply.body[:300]
    assert reply.json()["type"] == "message"
    assert model_requests == 1
    assert any(
        head.startswith(f"CONNECT 127.0.0.1:{simulator_port} HTTP/1.1\r\n".encode())
        for head in proxy.heads
    )


async def test_gateway_answers_a_proxy_407_with_a_clean_anthropic_error(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery, answer=refusal)
            proxy_url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
            async with open_gateway(tmp_path, environ={"HTTP_PROXY": proxy_url}) as running:
                reply = await post_messages(running.port, running.key, message_body())
                model_requests = len(running.simulator.model_requests())
            nursery.cancel_scope.cancel()

    assert_error(reply, 502, "api_error")
    assert model_requests == 0
    assert proxy.heads
    assert f"proxy 127.0.0.1:{proxy.port} refused CONNECT" in caplog.text
    assert "407 Proxy Authentication Required" in caplog.text
    assert PROXY_PASSWORD not in caplog.text + reply.body.decode()


async def test_gateway_answers_a_hung_proxy_within_the_connect_timeout(tmp_path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery, answer=None)
            async with open_gateway(
                tmp_path,
                settings={"connect_timeout": 0.3},
                environ={"HTTP_PROXY": proxy.url},
            ) as running:
                started = trio.current_time()
                reply = await post_messages(running.port, running.key, message_body())
                waited = trio.current_time() - started
            nursery.cancel_scope.cancel()

    assert_error(reply, 504, "timeout_error")
    assert waited < 5
