"""Endpoint URL resolution and parsing."""

from __future__ import annotations

import pytest

from ccag.bedrock.endpoint import parse_endpoint, resolve_endpoint_url
from ccag.errors import ConfigError

BOTH = {
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://127.0.0.1:9000/",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9001",
}


def test_resolve_endpoint_url_prefers_the_explicit_value() -> None:
    assert resolve_endpoint_url("http://127.0.0.1:1234", "us-east-1", BOTH) == "http://127.0.0.1:1234"


def test_resolve_endpoint_url_then_the_service_variable_then_the_global_one() -> None:
    assert resolve_endpoint_url(None, "us-east-1", BOTH) == "http://127.0.0.1:9000"
    only_global = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9001"}
    assert resolve_endpoint_url(None, "us-east-1", only_global) == "http://127.0.0.1:9001"


def test_resolve_endpoint_url_defaults_to_the_regional_endpoint() -> None:
    assert resolve_endpoint_url(None, "eu-west-3", {}) == (
        "https://bedrock-runtime.eu-west-3.amazonaws.com"
    )
    assert resolve_endpoint_url("", "cn-north-1", {"AWS_ENDPOINT_URL": ""}) == (
        "https://bedrock-runtime.cn-north-1.amazonaws.com.cn"
    )


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "host_header", "base_path"),
    [
        ("https://bedrock-runtime.us-east-1.amazonaws.com", "https",
         "bedrock-runtime.us-east-1.amazonaws.com", 443,
         "bedrock-runtime.us-east-1.amazonaws.com", ""),
        ("https://Example.COM:443/", "https", "example.com", 443, "example.com", ""),
        ("http://127.0.0.1:8080", "http", "127.0.0.1", 8080, "127.0.0.1:8080", ""),
        ("http://[::1]:9000/prefix/", "http", "::1", 9000, "[::1]:9000", "/prefix"),
        ("http://localhost", "http", "localhost", 80, "localhost", ""),
    ],
)
def test_parse_endpoint(
    url: str, scheme: str, host: str, port: int, host_header: str, base_path: str
) -> None:
    endpoint = parse_endpoint(url)

    assert (endpoint.scheme, endpoint.host, endpoint.port) == (scheme, host, port)
    assert (endpoint.host_header, endpoint.base_path) == (host_header, base_path)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com", "bedrock-runtime.us-east-1.amazonaws.com", "http://", 
     "http://h/?q=1", "https://user:pw@example.com", "http://h:99999"],
)
def test_parse_endpoint_refuses_what_it_cannot_use(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(url)
