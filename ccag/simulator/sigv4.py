"""Checking a request's AWS Signature Version 4, the way the AWS front end does.

The signature is recomputed with botocore's own SigV4 steps from what arrived:
the method, the path and query exactly as sent (botocore signs the
percent-encoded path and encodes it once more, as the client's signer did),
the headers named in ``SignedHeaders`` with their received values, the body
and ``x-amz-date``. The clock is handed in, so this module reads none.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Mapping

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ccag.server.types import Headers
from ccag.simulator.errors import BedrockError

MAX_CLOCK_SKEW = datetime.timedelta(minutes=5)
"""AWS refuses a signature whose x-amz-date is further than this from now."""

SIGNING_SERVICE = "bedrock"
_ALGORITHM = "AWS4-HMAC-SHA256"
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != _ALGORITHM:
        raise BedrockError(
            "IncompleteSignatureException",
            f"Authorization header requires '{_ALGORITHM}' as the algorithm.",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, field_value = part.strip().partition("=")
        fields[name] = field_value
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise BedrockError(
                "IncompleteSignatureException",
                f"Authorization header requires '{required}' parameter.",
            )
    return fields


def _check_date(amz_date: str | None, now: datetime.datetime) -> datetime.datetime:
    if not amz_date:
        raise BedrockError(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    try:
        signed_at = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise BedrockError("IncompleteSignatureException", f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.") from None

    stamp = now.strftime(SIGV4_TIMESTAMP)
    if signed_at < now - MAX_CLOCK_SKEW:
        earliest = (now - MAX_CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)
        raise BedrockError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {earliest} ({stamp} - 5 min.)",
        )
    if signed_at > now + MAX_CLOCK_SKEW:
        latest = (now + MAX_CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)
        raise BedrockError(
            "InvalidSignatureException",
            f"Signature not yet current: {amz_date} is still later than {latest} ({stamp} + 5 min.)",
        )
    return signed_at


def verify_sigv4(
    *,
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    secrets: Mapping[str, str],
    region: str,
    now: datetime.datetime,
    service: str = SIGNING_SERVICE,
) -> str:
    """Check the SigV4 signature of a request.

    Args:
        method: the request method.
        target: the path and query as received.
        headers: the received headers (lower-case names).
        body: the received body.
        secrets: access key id -> secret access key.
        region: the region the simulator stands in for.
        now: the current UTC time (timezone-aware).
        service: the signing name the scope must carry (``bedrock-mantle``
            for the mantle route).

    Returns:
        The access key id that signed the request.

    Raises:
        BedrockError: ``MissingAuthenticationTokenException`` (no
            Authorization), ``UnrecognizedClientException`` (unknown key),
            ``IncompleteSignatureException`` or ``InvalidSignatureException``.
    """
    # 1. The Authorization header and its credential scope.
    authorization = headers.get("authorization")
    if not authorization:
        raise BedrockError("MissingAuthenticationTokenException", "Missing Authentication Token")
    fields = _parse_authorization(authorization)
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise BedrockError("IncompleteSignatureException", "Credential must have exactly 5 slash-delimited elements.")
    access_key, scope_date, scope_region, scope_service, _ = scope
    secret = secrets.get(access_key)
    if secret is None:
        raise BedrockError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if scope_region != region:
        raise BedrockError("InvalidSignatureException", f"Credential should be scoped to a valid region, not '{scope_region}'. ")
    if scope_service != service:
        raise BedrockError("InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'. ")

    # 2. The date: present, fresh, and the one the scope names.
    amz_date = headers.get("x-amz-date")
    _check_date(amz_date, now)
    assert amz_date is not None
    if scope_date != amz_date[:8]:
        raise BedrockError("InvalidSignatureException", f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'.")

    # 3. Recompute over exactly the headers the client says it signed.
    signed_names = fields["SignedHeaders"].split(";")
    if "host" not in signed_names:
        raise BedrockError("InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    signed = {name: ",".join(headers.get_all(name)) for name in signed_names}
    host = headers.get("host") or "localhost"
    aws_request = AWSRequest(method=method, url=f"http://{host}{target}", headers=signed, data=body)
    aws_request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), scope_service, scope_region)
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)

    if signer.signed_headers(signer.headers_to_sign(aws_request)) != fields["SignedHeaders"]:
        raise BedrockError("InvalidSignatureException", _MISMATCH)
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise BedrockError("InvalidSignatureException", _MISMATCH)
    return access_key
