"""An ``https://`` proxy (TLS to the proxy itself), and IPv6 CONNECT targets.

The pool is tested on 127.0.0.1 through a TLS-terminating CONNECT proxy
written here (a trustme certificate for ``localhost``) in front of the TLS
fake upstream of ``tests/test_proxy.py`` (its own trustme CA): Bedrock's TLS
then runs inside the proxy's. The blocking control-plane path refuses such
a proxy, and writes an IPv6 target bracketed on its CONNECT line.
"""

from __future__ import annotations

import base64
import datetime
import functools
import logging
import ssl

import attrs
import pytest
import trio
import trustme

from ccag.bedrock.blocking_http import BlockingTarget
from ccag.bedrock.client import BedrockClient
from ccag.bedrock.discovery import list_profiles_fetcher
from ccag.bedrock.errors import CredentialsError, UpstreamConnectError
from ccag.bedrock.proxy import parse_proxy_url
from ccag.bedrock.signing import AwsCredentials
from ccag.bedrock.sts import assume_role
from ccag.errors import ConfigError
from tests.test_proxy import (
    ESTABLISHED,
    PROXY_PASSWORD,
    PROXY_USER,
    _pipe_both_ways,
    _read_head,
    header_of,
    open_fake_proxy,
    post_twice,
    static_credentials,
)
from tests.upstream_fakes import open_fake_upstream

TIMEOUT = 10
BASIC = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()


@attrs.define
class TlsProxy:
    """A CONNECT proxy that speaks TLS to its clients, then pipes to 127.0.0.1:<port>."""

    server_context: ssl.SSLContext
    port: int = 0
    heads: list[bytes] = attrs.Factory(list)
    handshakes_failed: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, tcp: trio.SocketStream) -> None:
        client = trio.SSLStream(tcp, self.server_context, server_side=True)
        try:
            try:
                await client.do_handshake()
            except trio.BrokenResourceError:
                self.handshakes_failed += 1
                return
            head, leftover = await _read_head(client)  # type: ignore[arg-type]
            self.heads.append(head)
            await client.send_all(ESTABLISHED)
            target_port = int(head.split(b" ")[1].rpartition(b":")[2])
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            async with upstream:
                await upstream.send_all(leftover)
                await _pipe_both_ways(client, upstream)  # type: ignore[arg-type]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(client)


def trusting(*authorities: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts each of ``authorities`` (and checks host names)."""
    context = ssl.create_default_context()
    for authority in authorities:
        authority.configure_trust(context)
    return context


def server_context_for(authority: trustme.CA, host: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert(host).configure_cert(context)
    return context


async def open_tls_proxy(nursery: trio.Nursery, authority: trustme.CA) -> TlsProxy:
    proxy = TlsProxy(server_context_for(authority, "localhost"))
    await nursery.start(functools.partial(proxy.serve))
    return proxy


# -- the pool through an https:// proxy -----------------------------------------


def test_an_https_proxy_url_is_read_as_tls_to_the_proxy() -> None:
    proxy = parse_proxy_url(f"https://{PROXY_USER}:{PROXY_PASSWORD}@proxy.corp")
    plain = parse_proxy_url("proxy.corp:3128")

    assert (proxy.tls, proxy.port, proxy.display) == (True, 443, "https://***@proxy.corp")
    assert (plain.tls, plain.port) == (False, 3128)


async def test_tls_to_bedrock_runs_inside_tls_to_the_proxy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    proxy_authority, upstream_authority = trustme.CA(), trustme.CA()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            upstream = await open_fake_upstream(
                nursery, ssl_context=server_context_for(upstream_authority, "localhost")
            )
            proxy = await open_tls_proxy(nursery, proxy_authority)
            proxy_url = f"https://{PROXY_USER}:{PROXY_PASSWORD}@localhost:{proxy.port}"
            client = BedrockClient(
                f"https://localhost:{upstream.port}",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                ssl_context=trusting(proxy_authority, upstream_authority),
                environ={"HTTPS_PROXY": proxy_url},
            )
            results = await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert results == [(200, b'{"ok":true}')] * 2
    # One tunnel, kept alive for both requests.
    assert [head.split(b"\r\n")[0] for head in proxy.heads] == [
        f"CONNECT localhost:{upstream.port} HTTP/1.1".encode()
    ]
    assert header_of(proxy.heads[0], b"proxy-authorization") == f"Basic {BASIC}".encode()
    assert f"through proxy https://***@localhost:{proxy.port}" in caplog.text
    assert PROXY_PASSWORD not in caplog.text
    assert BASIC not in caplog.text


async def test_plain_http_endpoint_through_an_https_proxy() -> None:
    proxy_authority = trustme.CA()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            upstream = await open_fake_upstream(nursery)
            proxy = await open_tls_proxy(nursery, proxy_authority)
            client = BedrockClient(
                f"http://127.0.0.1:{upstream.port}",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                ssl_context=trusting(proxy_authority),
                environ={"HTTP_PROXY": f"https://localhost:{proxy.port}"},
            )
            results = await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    assert results == [(200, b'{"ok":true}')] * 2
    assert len(proxy.heads) == 1


@pytest.mark.parametrize(
    ("proxy_host", "trusted"),
    [("127.0.0.1", True), ("localhost", False)],
    ids=["certificate-for-another-host", "untrusted-ca"],
)
async def test_a_proxy_certificate_that_fails_the_check_is_a_connect_error_naming_the_proxy(
    proxy_host: str, trusted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy_authority = trustme.CA()
    trusted_authority = proxy_authority if trusted else trustme.CA()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy = await open_tls_proxy(nursery, proxy_authority)
            client = BedrockClient(
                "https://localhost:1",
                "us-east-1",
                static_credentials(),
                connect_timeout=5,
                ssl_context=trusting(trusted_authority),
                environ={
                    "HTTPS_PROXY": f"https://{PROXY_USER}:{PROXY_PASSWORD}@{proxy_host}:{proxy.port}"
                },
            )
            with pytest.raises(UpstreamConnectError) as caught:
                await post_twice(client)
            await client.aclose()
            nursery.cancel_scope.cancel()

    message = str(caught.value)
    assert f"TLS to proxy {proxy_host}:{proxy.port} failed" in message
    assert "certificate" in message
    # Nothing, credentials least of all, went to a proxy that failed the check.
    assert proxy.heads == []
    assert PROXY_PASSWORD not in message + caplog.text
    assert BASIC not in caplog.text


# -- the blocking control-plane path ----------------------------------------------


def test_discovery_refuses_an_https_proxy_naming_the_limitation() -> None:
    with pytest.raises(ConfigError, match="http.client cannot run TLS") as caught:
        list_profiles_fetcher(
            "https://bedrock.us-east-1.amazonaws.com", "us-east-1", None, "token",
            environ={"HTTPS_PROXY": f"https://u:{PROXY_PASSWORD}@proxy.corp:3128"},
        )

    assert PROXY_PASSWORD not in str(caught.value)


def test_assume_role_refuses_an_https_proxy_naming_the_limitation() -> None:
    with pytest.raises(CredentialsError, match="only http:// proxies") as caught:
        assume_role(
            sts_url="https://sts.us-east-1.amazonaws.com",
            region="us-east-1",
            source=AwsCredentials("AKIDSOURCE", "source-secret"),
            role_arn="arn:aws:iam::210987654321:role/bedrock",
            session_name="ccag",
            duration_seconds=900,
            external_id=None,
            now=datetime.datetime.now(datetime.UTC),
            environ={"HTTPS_PROXY": f"https://u:{PROXY_PASSWORD}@proxy.corp:3128"},
        )

    assert PROXY_PASSWORD not in str(caught.value)


def _get_through(target: BlockingTarget) -> tuple[int, bytes]:
    connection = target.connection(TIMEOUT)
    try:
        connection.request("POST", "/model/m/invoke", body=b"{}", headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def test_a_blocking_call_to_an_ipv6_literal_brackets_the_connect_target() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            upstream = await open_fake_upstream(nursery)
            proxy = await open_fake_proxy(nursery)
            # The fake proxy pipes to 127.0.0.1:<port> whatever the target
            # host, so the target may be written as ::1.
            target = BlockingTarget.choose("http", "::1", upstream.port, {"HTTP_PROXY": proxy.url})
            status, body = await trio.to_thread.run_sync(_get_through, target)
            nursery.cancel_scope.cancel()

    assert (status, body) == (200, b'{"ok":true}')
    assert [head.split(b"\r\n")[0] for head in proxy.heads] == [
        f"CONNECT [::1]:{upstream.port} HTTP/1.1".encode()
    ]
    assert [request.header("host") for request in upstream.requests] == [f"[::1]:{upstream.port}"]
