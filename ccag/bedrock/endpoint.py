"""Where Bedrock Runtime is: the endpoint URL and the ``Host`` it implies.

Pure: the environment is handed in, never read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from ccag.errors import ConfigError

# The environment variables the AWS SDKs read for a service-specific endpoint
# and for all services, most specific first.
ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL")

# The default ports, left out of the Host header as botocore leaves them out
# (the signature covers Host, so both must agree).
DEFAULT_PORTS = {"http": 80, "https": 443}


def resolve_endpoint_url(explicit: str | None, region: str, environ: Mapping[str, str]) -> str:
    """The Bedrock Runtime URL to send requests to.

    Args:
        explicit: the ``endpoint_url`` setting, if one was given.
        region: the AWS region, used for the default endpoint.
        environ: the process environment (or a stand-in in tests).

    Returns:
        The explicit value, else ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, else
        ``AWS_ENDPOINT_URL``, else the public regional endpoint
        (``.amazonaws.com.cn`` in the China regions). A trailing ``/`` is
        dropped so that request paths can be appended.
    """
    for candidate in (explicit, *(environ.get(name) for name in ENDPOINT_ENV_VARS)):
        if candidate:
            return candidate.rstrip("/")
    return default_runtime_url(region)


def default_runtime_url(region: str) -> str:
    """Bedrock Runtime's public URL in ``region``."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://bedrock-runtime.{region}.{suffix}"


@attrs.frozen
class Endpoint:
    """A parsed endpoint URL: what a connection and a request line need.

    Attributes:
        url: the URL as configured, without a trailing ``/``.
        scheme: ``http`` or ``https``.
        host: the host to connect to (IPv6 without brackets).
        port: the TCP port.
        host_header: the ``Host`` value to send and sign: lower case, the port
            only when it is not the scheme's default, IPv6 in brackets.
        base_path: a path prefix to put before every request path, or ``""``.
    """

    url: str
    scheme: str
    host: str
    port: int
    host_header: str
    base_path: str


def parse_endpoint(url: str) -> Endpoint:
    """Split an endpoint URL into what a connection needs.

    Raises:
        ConfigError: the URL is not an ``http`` or ``https`` URL with a host,
            or it carries a query, fragment or credentials we would not send.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"endpoint_url {url!r}: must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"endpoint_url {url!r}: must not have a query or fragment")
    if parts.username is not None:
        raise ConfigError(f"endpoint_url {url!r}: must not carry credentials")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ConfigError(f"endpoint_url {url!r}: {exc}") from exc

    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[parts.scheme]:
        host_header = f"{host_header}:{port}"
    return Endpoint(
        url=url.rstrip("/"),
        scheme=parts.scheme,
        host=host,
        port=port,
        host_header=host_header,
        base_path=parts.path.rstrip("/"),
    )
