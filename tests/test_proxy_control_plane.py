"""Model discovery and STS AssumeRole through an HTTP proxy (HTTPS_PROXY / NO_PROXY).

Both calls run blocking ``http.client`` code in a worker thread
(``ccag.bedrock.blocking_http``). Here they go, on 127.0.0.1, through the
small CONNECT proxy of ``tests/test_proxy.py`` to the bundled simulator's
ListInferenceProfiles and to the STS stand-in of ``tests/test_sts.py``
(over TLS with a trustme certificate for ``localhost`` where the certificate
check is the point).
"""

from __future__ import annotations

import base64
import datetime
import functools
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from ccag.anthropic.models import ModelCatalog
from ccag.bedrock.credentials import CredentialSource
from ccag.bedrock.discovery import list_profiles_fetcher
from ccag.bedrock.endpoints import RoutingRules, parse_endpoint
from ccag.bedrock.errors import CredentialsError, UpstreamError
from ccag.bedrock.facts import shipped_models
from ccag.bedrock.router import EndpointRouter
from ccag.bedrock.signing import AwsCredentials
from ccag.bedrock.sts import assume_role
from ccag.config import load_config
from ccag.errors import ConfigError
from ccag.server import serve
from ccag.simulator import Simulator, open_simulator
from tests.test_proxy import (
    PROXY_PASSWORD,
    PROXY_USER,
    FakeProxy,
    header_of,
    open_fake_proxy,
)
from tests.test_sts import ExpiringSecrets, StsStandIn

TIMEOUT = 10
REFUSAL = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
ROLE_ARN = "arn:aws:iam::210987654321:role/bedrock"
SOURCE = AwsCredentials("AKIDSOURCE", "source-secret")
BASIC = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()


def with_password(proxy: FakeProxy) -> str:
    return f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"


def connect_lines(proxy: FakeProxy) -> list[str]:
    return [head.split(b"\r\n")[0].decode() for head in proxy.heads]


def sim_credentials(simulator: Simulator) -> CredentialSource:
    return CredentialSource.static(simulator.access_key, simulator.secret_key)


async def fetch_profiles(simulator: Simulator, environ: dict[str, str]) -> list[str]:
    fetch = list_profiles_fetcher(
        simulator.url, simulator.region, sim_credentials(simulator), None, environ=environ
    )
    return await fetch()


async def open_sts(
    nursery: trio.Nursery, accepted: ExpiringSecrets, tls: dict[str, str] | None = None
) -> tuple[StsStandIn, int]:
    stand_in = StsStandIn(accepted)
    config = load_config({"host": "127.0.0.1", "port": 0, **(tls or {})}, environ={})
    port = await nursery.start(functools.partial(serve, stand_in, config))
    return stand_in, port


async def call_sts(sts_url: str, environ: dict[str, str], ssl_context: ssl.SSLContext | None = None) -> Any:
    """``assume_role`` in a worker thread, as AssumedRoleCredentials runs it."""
    call: Callable[[], Any] = functools.partial(
        assume_role,
        sts_url=sts_url,
        region="us-east-1",
        source=SOURCE,
        role_arn=ROLE_ARN,
        session_name="ccag",
        duration_seconds=900,
        external_id=None,
        now=datetime.datetime.now(datetime.UTC),
        environ=environ,
        ssl_context=ssl_context,
    )
    return await trio.to_thread.run_sync(call, abandon_on_cancel=True)


# -- discovery --------------------------------------------------------------------


async def test_discovery_lists_the_simulator_profiles_through_the_proxy() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as simulator, trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery)
            direct = await fetch_profiles(simulator, {})
            proxied = await fetch_profiles(simulator, {"HTTP_PROXY": with_password(proxy)})
            kinds = [record.kind for record in simulator.requests]
            nursery.cancel_scope.cancel()

    assert proxied == direct
    assert any(profile_id.startswith("us.anthropic.claude-") for profile_id in proxied)
    assert kinds == ["inference-profiles"] * 2
    assert connect_lines(proxy) == [f"CONNECT 127.0.0.1:{simulator.port} HTTP/1.1"]
    assert header_of(proxy.heads[0], b"proxy-authorization") == BASIC.encode()


async def test_discovery_honours_no_proxy() -> None:
    environ = {"HTTP_PROXY": "http://127.0.0.1:1", "NO_PROXY": "example.com, 127.0.0.1"}

    with trio.fail_after(TIMEOUT):
        async with open_simulator() as simulator:
            profile_ids = await fetch_profiles(simulator, environ)

    # Port 1 refuses: only a direct connection could have listed anything.
    assert any(profile_id.startswith("us.anthropic.") for profile_id in profile_ids)


async def test_a_refusing_proxy_fails_discovery_with_its_address_and_status() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as simulator, trio.open_nursery() as nursery:
            proxy = await open_fake_proxy(nursery, answer=REFUSAL)
            with pytest.raises(UpstreamError) as caught:
                await fetch_profiles(simulator, {"HTTP_PROXY": with_password(proxy)})
            nursery.cancel_scope.cancel()

    message = str(caught.value)
    assert message.startswith(f"cannot reach 127.0.0.1:{simulator.port} through proxy 127.0.0.1:{proxy.port}")
    assert "407 Proxy Authentication Required" in message
    assert PROXY_PASSWORD not in message and BASIC not in message
    assert simulator.requests == []


def test_an_unusable_proxy_setting_stops_discovery_being_set_up() -> None:
    with pytest.raises(ConfigError, match="only http://") as caught:
        list_profiles_fetcher(
            "https://bedrock.us-east-1.amazonaws.com", "us-east-1", None, "token",
            environ={"HTTPS_PROXY": f"https://u:{PROXY_PASSWORD}@proxy.corp:3128"},
        )

    assert PROXY_PASSWORD not in str(caught.value)


# -- STS ------------------------------------------------------------------------


async def test_assume_role_goes_through_the_proxy() -> None:
    accepted = ExpiringSecrets()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stand_in, sts_port = await open_sts(nursery, accepted)
            proxy = await open_fake_proxy(nursery)
            credentials, _expiry = await call_sts(
                f"http://127.0.0.1:{sts_port}", {"http_proxy": with_password(proxy)}
            )
            nursery.cancel_scope.cancel()

    assert accepted[credentials.access_key] == credentials.secret_key
    assert [call["Action"] for call in stand_in.calls] == ["AssumeRole"]
    assert connect_lines(proxy) == [f"CONNECT 127.0.0.1:{sts_port} HTTP/1.1"]
    assert header_of(proxy.heads[0], b"proxy-authorization") == BASIC.encode()


async def test_assume_role_honours_no_proxy() -> None:
    environ = {"HTTP_PROXY": "http://127.0.0.1:1", "no_proxy": "127.0.0.1"}

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stand_in, sts_port = await open_sts(nursery, ExpiringSecrets())
            credentials, _expiry = await call_sts(f"http://127.0.0.1:{sts_port}", environ)
            nursery.cancel_scope.cancel()

    assert credentials.access_key.startswith("ASIATEST")
    assert len(stand_in.calls) == 1


async def test_a_refusing_proxy_fails_assume_role_with_its_address_and_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stand_in, sts_port = await open_sts(nursery, ExpiringSecrets())
            proxy = await open_fake_proxy(nursery, answer=REFUSAL)
            sts_url = f"http://127.0.0.1:{sts_port}"
            with pytest.raises(CredentialsError) as caught:
                await call_sts(sts_url, {"HTTP_PROXY": with_password(proxy)})
            nursery.cancel_scope.cancel()

    message = str(caught.value)
    assert message.startswith(f"cannot reach STS at {sts_url} through proxy 127.0.0.1:{proxy.port}: ")
    assert "407 Proxy Authentication Required" in message
    assert stand_in.calls == []
    assert PROXY_PASSWORD not in message + caplog.text
    assert BASIC not in message + caplog.text


@pytest.fixture
def sts_tls(tmp_path: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    """TLS settings serving a certificate for ``localhost``, and a client trusting it."""
    authority = trustme.CA()
    certificate = authority.issue_cert("localhost")
    cert_path, key_path = tmp_path / "sts.pem", tmp_path / "sts.key"
    certificate.cert_chain_pems[0].write_to_path(str(cert_path))
    certificate.private_key_pem.write_to_path(str(key_path))
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return {"tls_cert": str(cert_path), "tls_key": str(key_path)}, client_context


@pytest.mark.parametrize(("host", "verified"), [("localhost", True), ("127.0.0.1", False)])
async def test_tls_to_sts_through_the_proxy_checks_the_sts_host_certificate(
    sts_tls: tuple[dict[str, str], ssl.SSLContext], host: str, verified: bool
) -> None:
    tls_settings, client_context = sts_tls

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stand_in, sts_port = await open_sts(nursery, ExpiringSecrets(), tls_settings)
            proxy = await open_fake_proxy(nursery)
            environ = {"HTTPS_PROXY": proxy.url}
            sts_url = f"https://{host}:{sts_port}"
            if verified:
                credentials, _expiry = await call_sts(sts_url, environ, client_context)
            else:
                with pytest.raises(CredentialsError, match="CERTIFICATE_VERIFY_FAILED") as caught:
                    await call_sts(sts_url, environ, client_context)
            nursery.cancel_scope.cancel()

    # The proxy was asked for the STS host, and the certificate, issued for
    # localhost only, was checked against that name, not the proxy's address.
    assert connect_lines(proxy) == [f"CONNECT {host}:{sts_port} HTTP/1.1"]
    if verified:
        assert credentials.access_key.startswith("ASIATEST") and len(stand_in.calls) == 1
    else:
        assert f"through proxy 127.0.0.1:{proxy.port}" in str(caught.value)
        assert stand_in.calls == []


# -- the router passes its environment on ----------------------------------------


async def test_router_discovery_and_role_assumption_both_use_the_proxy() -> None:
    accepted = ExpiringSecrets()

    with trio.fail_after(TIMEOUT):
        async with open_simulator(credentials=accepted) as simulator, trio.open_nursery() as nursery:
            stand_in, sts_port = await open_sts(nursery, accepted)
            proxy = await open_fake_proxy(nursery)
            spec = parse_endpoint(
                {
                    "id": "cross-account",
                    "region": simulator.region,
                    "url": simulator.url,
                    "control_url": simulator.url,
                    "credentials": {
                        "type": "assume_role",
                        "role_arn": ROLE_ARN,
                        "access_key_id": SOURCE.access_key,
                        "secret_access_key": SOURCE.secret_key,
                        "sts_url": f"http://127.0.0.1:{sts_port}",
                    },
                }
            )
            router = EndpointRouter(
                [spec],
                RoutingRules(),
                ModelCatalog(shipped_models()),
                environ={"HTTP_PROXY": with_password(proxy)},
            )
            await router.discovery.refresh("cross-account")
            profile_ids = router.discovery.profile_ids("cross-account")
            await router.aclose()
            nursery.cancel_scope.cancel()

    assert profile_ids
    assert len(stand_in.calls) == 1
    assert connect_lines(proxy) == [
        f"CONNECT 127.0.0.1:{sts_port} HTTP/1.1",
        f"CONNECT 127.0.0.1:{simulator.port} HTTP/1.1",
    ]
    assert all(header_of(head, b"proxy-authorization") == BASIC.encode() for head in proxy.heads)
