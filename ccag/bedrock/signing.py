"""Signing a Bedrock request: SigV4 through botocore, or a Bedrock API key.

Everything here is a pure function of the request, the credentials and a
clock reading handed in by the caller, so a signature is reproducible in tests.

SigV4 is botocore's own signer (``botocore.auth.SigV4Auth``) with two
changes that do not alter a single byte of the result:

* the timestamp comes from the caller instead of botocore's global clock;
* the signing key, four HMACs deep, is derived once per secret, day, region
  and service instead of once per request, and the body is hashed directly
  instead of through ``AWSRequest.prepare``.

Paths are percent-encoded as boto3 encodes a URI label (``:`` becomes
``%3A``, ``/`` becomes ``%2F``). Bedrock, like every AWS service except S3,
expects the canonical URI to be that path encoded once more (``%253A``);
botocore does that, and the tests hold it to a published AWS test vector.
"""

from __future__ import annotations

import datetime
import functools
import hmac
from collections.abc import Iterable, Mapping
from hashlib import sha256
from urllib.parse import quote

import attrs
from botocore.auth import SIGNED_HEADERS_BLACKLIST, SigV4Auth
from botocore.awsrequest import AWSRequest

SIGV4_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

# The characters botocore leaves alone in a URI label (botocore.utils
# SAFE_CHARS): the RFC 3986 unreserved set. Everything else, ``/`` included,
# is percent-encoded, which is what makes an ARN one path segment.
URI_LABEL_SAFE_CHARS = "-._~"

# Signing keys kept: one per (secret, day, region, service). A gateway uses one
# or a few of each; the bound only stops a stream of rotated secrets growing it.
SIGNING_KEY_CACHE_SIZE = 64

HeaderPairs = list[tuple[str, str]]

# Headers botocore's signer adds, replaces or reads itself: a request that
# already carries one is signed by botocore, which knows what to do with it.
_SPECIAL_HEADERS = frozenset(
    {"authorization", "date", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
)


@attrs.frozen(repr=False)
class AwsCredentials:
    """One frozen set of AWS credentials.

    The attribute names are botocore's, so an instance can be handed to
    botocore's signer as it is.
    """

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        # Never the secret or the token: reprs end up in logs and tracebacks.
        session = ", session" if self.token else ""
        return f"AwsCredentials({self.access_key!r}{session})"


def model_path(model_id: str, action: str) -> str:
    """The request path of a Bedrock Runtime model action, encoded as boto3 does.

    Args:
        model_id: a model id, inference profile id or ARN, such as
            ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``.
        action: ``invoke``, ``invoke-with-response-stream`` or ``count-tokens``.

    Returns:
        For example ``/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke``.
    """
    return f"/model/{quote(model_id, safe=URI_LABEL_SAFE_CHARS)}/{action}"


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime.datetime,
) -> HeaderPairs:
    """Sign a request with AWS Signature Version 4.

    Args:
        method: the HTTP method, such as ``POST``.
        url: the full URL, path already percent-encoded (see :func:`model_path`).
        headers: the headers to send and sign. Pass ``Host`` to sign the value
            you will send; without it botocore derives one from ``url``.
        body: the exact body bytes that will be sent.
        credentials: the access key, secret and optional session token.
        region: the signing region, such as ``us-east-1``.
        service: the signing name; ``bedrock`` for Bedrock Runtime.
        now: the signing time, in UTC (naive values are taken as UTC).

    Returns:
        The headers to send: those given, then ``X-Amz-Date``,
        ``X-Amz-Security-Token`` when there is a session token, and
        ``Authorization``.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    if now.tzinfo is not None:
        now = now.astimezone(datetime.UTC)
    pairs = list(pairs)
    signed = _sign_plain_request(method, url, pairs, body, credentials, region, service, now)
    if signed is not None:
        return signed

    request = AWSRequest(method=method, url=url, data=body)
    for name, value in pairs:
        request.headers[name] = value

    signer = _ClockedSigV4Auth(credentials, service, region, now, body)
    signer.add_auth(request)
    return list(request.headers.items())


def bearer_auth(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], token: str
) -> HeaderPairs:
    """Authorize a request with a Bedrock API key instead of SigV4.

    Bedrock accepts ``Authorization: Bearer <key>`` (the key boto3 reads from
    ``AWS_BEARER_TOKEN_BEDROCK``); nothing else about the request changes.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    signed = [(name, value) for name, value in pairs if name.lower() != "authorization"]
    signed.append(("Authorization", "Bearer " + token))
    return signed


def _sign_plain_request(
    method: str,
    url: str,
    pairs: list[tuple[str, str]],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime.datetime,
) -> HeaderPairs | None:
    """botocore's SigV4 steps written out for the requests ccag sends.

    Only for the plain shape every Bedrock call has: a ``Host`` header, no
    query, a path without dot or empty segments, distinct header names, and
    none of the headers botocore's signer treats specially. Anything else
    returns None and goes through botocore. Tests hold the two to the same
    bytes on random requests.
    """
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3)
    path = url[path_start:] if path_start >= 0 else ""
    if scheme_end < 0 or not path or "?" in url or "#" in url or "//" in path or "/." in path:
        return None
    names = [name.lower() for name, _ in pairs]
    if (
        len(set(names)) != len(names)
        or "host" not in names
        or _SPECIAL_HEADERS.intersection(names)
        or any(name != name.strip() for name in names)
    ):
        return None

    # The canonical request (botocore: canonical_request).
    timestamp = now.strftime(SIGV4_TIMESTAMP_FORMAT)
    to_sign = [
        (name, " ".join(value.split()))
        for name, (_, value) in zip(names, pairs)
        if name not in SIGNED_HEADERS_BLACKLIST
    ]
    to_sign.append(("x-amz-date", timestamp))
    if credentials.token:
        to_sign.append(("x-amz-security-token", credentials.token))
    to_sign.sort()
    signed_headers = ";".join(name for name, _ in to_sign)
    canonical_request = "\n".join(
        (
            method.upper(),
            quote(path, safe="/~"),
            "",
            "".join(f"{name}:{value}\n" for name, value in to_sign),
            signed_headers,
            sha256(body).hexdigest(),
        )
    )

    # The string to sign and the signature (botocore: string_to_sign, signature).
    day = timestamp[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (
            "AWS4-HMAC-SHA256",
            timestamp,
            scope,
            sha256(canonical_request.encode()).hexdigest(),
        )
    )
    key = signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, string_to_sign.encode(), sha256).hexdigest()

    signed = list(pairs)
    signed.append(("X-Amz-Date", timestamp))
    if credentials.token:
        signed.append(("X-Amz-Security-Token", credentials.token))
    signed.append(
        (
            "Authorization",
            (
                f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                f"SignedHeaders={signed_headers}, Signature={signature}"
            ),
        )
    )
    return signed


@functools.lru_cache(maxsize=SIGNING_KEY_CACHE_SIZE)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key of one day (``YYYYMMDD``), region and service."""
    key = hmac.new(("AWS4" + secret_key).encode(), date.encode(), sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), sha256).digest()
    return key


class _ClockedSigV4Auth(SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """botocore's SigV4 signer with an injected clock and a cached signing key.

    ``add_auth`` runs botocore's own steps in botocore's order; only where the
    timestamp comes from changes. One instance signs one request.
    """

    def __init__(
        self,
        credentials: AwsCredentials,
        service: str,
        region: str,
        now: datetime.datetime,
        body: bytes,
    ) -> None:
        super().__init__(credentials, service, region)
        self._timestamp = now.strftime(SIGV4_TIMESTAMP_FORMAT)
        self._body = body
        self._headers_to_sign: object = None

    def add_auth(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._timestamp
        self._modify_request_before_signing(request)

        canonical_request = self.canonical_request(request)
        string_to_sign = self.string_to_sign(request, canonical_request)
        signature = self.signature(string_to_sign, request)

        self._inject_signature_to_request(request, signature)

    def headers_to_sign(self, request: AWSRequest) -> object:
        # botocore computes this twice per signature (canonical request, then
        # the Authorization header); the headers do not change in between.
        if self._headers_to_sign is None:
            self._headers_to_sign = super().headers_to_sign(request)
        return self._headers_to_sign

    def payload(self, request: AWSRequest) -> str:
        # The body is bytes already; botocore would re-prepare the request to
        # get at it. Payload signing stays on, as botocore has it for Bedrock.
        return sha256(self._body).hexdigest()

    def signature(self, string_to_sign: str, request: AWSRequest) -> str:
        key = signing_key(
            self.credentials.secret_key,
            self._timestamp[:8],
            self._region_name,
            self._service_name,
        )
        return hmac.new(key, string_to_sign.encode(), sha256).hexdigest()
