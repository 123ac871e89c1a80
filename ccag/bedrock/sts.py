"""Credentials from STS AssumeRole, refreshed before they expire.

An endpoint in another account is reached by assuming a role there: STS's
query API (``POST /`` with ``Action=AssumeRole``, SigV4 service ``sts``)
answers XML holding an access key, secret, session token and expiry.

:class:`AssumedRoleCredentials` has the ``get()`` of
:class:`~ccag.bedrock.credentials.CredentialSource`: the usual call returns
the held credentials; from :data:`REFRESH_FRACTION` of their lifetime before
expiry (at most :data:`~ccag.bedrock.credentials.REFRESH_MARGIN`) one caller
fetches new ones in a worker thread while the others keep signing with the
old ones, which are still valid. The STS URL is configurable, so tests point
it at a loopback stand-in. The call goes through the proxy the environment
names, as Bedrock calls do (``ccag.bedrock.blocking_http``).
"""

from __future__ import annotations

import datetime
import http.client
import os
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from xml.etree import ElementTree

import trio

from ccag.bedrock.blocking_http import BlockingTarget, failure_text
from ccag.bedrock.credentials import MINIMUM_REMAINING, REFRESH_MARGIN
from ccag.bedrock.errors import CredentialsError
from ccag.bedrock.signing import AwsCredentials, sign_request
from ccag.errors import ConfigError

STS_API_VERSION = "2011-06-15"

# Seconds an STS call may take; it answers in milliseconds when healthy.
STS_TIMEOUT_SECONDS = 10.0

# An STS answer is a few kilobytes; more is not STS.
MAX_STS_RESPONSE_BYTES = 64 * 1024

# Refresh once this share of the lifetime is left, so short-lived
# credentials (as in tests, or a 15-minute role) are not refreshed on every
# request while long-lived ones refresh REFRESH_MARGIN ahead.
REFRESH_FRACTION = 0.25

_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"

Loaded = tuple[AwsCredentials, datetime.datetime]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def default_sts_url(region: str) -> str:
    """The regional STS endpoint (regional endpoints are AWS's advice)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{suffix}"


def assume_role_body(
    role_arn: str, session_name: str, duration_seconds: int, external_id: str | None
) -> bytes:
    """The form body of an AssumeRole call."""
    fields = [
        ("Action", "AssumeRole"),
        ("Version", STS_API_VERSION),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("DurationSeconds", str(duration_seconds)),
    ]
    if external_id:
        fields.append(("ExternalId", external_id))
    return urllib.parse.urlencode(fields).encode()


def parse_assume_role_response(body: bytes) -> Loaded:
    """The credentials and expiry in an AssumeRole answer.

    Raises:
        CredentialsError: the XML holds no complete credentials.
    """
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise CredentialsError(f"STS answered something that is not XML: {exc}") from None
    found = root.find(f".//{_NS}Credentials")
    if found is None:
        found = root.find(".//Credentials")
    if found is None:
        raise CredentialsError("STS answered without Credentials")

    def text(name: str) -> str:
        node = found.find(f"{_NS}{name}")
        if node is None:
            node = found.find(name)
        if node is None or not (node.text or "").strip():
            raise CredentialsError(f"STS answered without {name}")
        return (node.text or "").strip()

    expiration = text("Expiration")
    try:
        expiry = datetime.datetime.fromisoformat(expiration)
    except ValueError:
        raise CredentialsError(f"STS answered an unreadable Expiration {expiration[:40]!r}") from None
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    credentials = AwsCredentials(text("AccessKeyId"), text("SecretAccessKey"), text("SessionToken"))
    return credentials, expiry


def _sts_error(status: int, body: bytes) -> str:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return f"HTTP {status}"
    code = root.find(f".//{_NS}Code")
    if code is None:
        code = root.find(".//Code")
    message = root.find(f".//{_NS}Message")
    if message is None:
        message = root.find(".//Message")
    parts = [(node.text or "").strip() for node in (code, message) if node is not None]
    return f"HTTP {status}: {': '.join(p for p in parts if p)}"


def assume_role(
    *,
    sts_url: str,
    region: str,
    source: AwsCredentials,
    role_arn: str,
    session_name: str,
    duration_seconds: int,
    external_id: str | None,
    now: datetime.datetime,
    environ: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Loaded:
    """Call AssumeRole once (blocking: run it in a worker thread).

    Args:
        environ: where the proxy variables are read; ``os.environ`` if None.
        ssl_context: for an ``https`` STS URL; the system CAs if None.

    Raises:
        CredentialsError: STS (or the proxy on the way) could not be reached
            or refused, or the proxy setting is unusable.
    """
    body = assume_role_body(role_arn, session_name, duration_seconds, external_id)
    parts = urllib.parse.urlsplit(sts_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CredentialsError(f"sts_url {sts_url!r} is not an http(s) URL")
    path = (parts.path or "/") if parts.path.endswith("/") else parts.path + "/"
    host = parts.netloc
    headers = sign_request(
        "POST",
        f"{parts.scheme}://{host}{path}",
        [("host", host), ("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
        body,
        source,
        region,
        "sts",
        now,
    )
    try:
        target = BlockingTarget.choose(
            parts.scheme, parts.hostname, parts.port, os.environ if environ is None else environ
        )
    except ConfigError as exc:
        raise CredentialsError(f"cannot reach STS at {sts_url}: {exc}") from None

    connection = target.connection(STS_TIMEOUT_SECONDS, ssl_context)
    try:
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        answer = response.read(MAX_STS_RESPONSE_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        # A proxy's refusal lands here too, as "Tunnel connection failed".
        where = target.describe(sts_url)
        raise CredentialsError(f"cannot reach STS at {where}: {failure_text(exc)}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise CredentialsError(f"STS refused AssumeRole for {role_arn}: {_sts_error(response.status, answer)}")
    return parse_assume_role_response(answer)


class AssumedRoleCredentials:
    """Credentials of an assumed role, for :class:`~ccag.bedrock.client.BedrockClient`.

    Args:
        source: the credentials AssumeRole is called with (a blocking
            function returning them; it runs in a worker thread).
        role_arn, session_name, duration_seconds, external_id: the call.
        sts_url: the STS endpoint.
        region: the signing region of the STS call.
        clock: the current time, aware; injected by tests.
        environ: where the proxy variables are read; ``os.environ`` if None.
    """

    def __init__(
        self,
        source: Callable[[], AwsCredentials],
        *,
        role_arn: str,
        sts_url: str,
        region: str,
        session_name: str = "ccag",
        duration_seconds: int = 3600,
        external_id: str | None = None,
        clock: Callable[[], datetime.datetime] = _utc_now,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._source = source
        self._environ = os.environ if environ is None else environ
        self._role_arn = role_arn
        self._sts_url = sts_url
        self._region = region
        self._session_name = session_name
        self._duration_seconds = duration_seconds
        self._external_id = external_id
        self._clock = clock
        self._current: AwsCredentials | None = None
        self._expiry: datetime.datetime | None = None
        self._refresh_at: datetime.datetime | None = None
        self._lock = trio.Lock()
        self.refreshes = 0

    async def get(self) -> AwsCredentials:
        """The credentials to sign the next request with.

        Raises:
            CredentialsError: no credentials could be had.
        """
        if self._current is not None and self._is_fresh():
            return self._current

        # Someone is refreshing and ours still have life: do not queue.
        if self._current is not None and self._lock.locked() and self._is_usable():
            return self._current

        async with self._lock:
            if self._current is not None and self._is_fresh():
                return self._current
            return await self._refresh()

    def _load(self) -> Loaded:
        return assume_role(
            sts_url=self._sts_url,
            region=self._region,
            source=self._source(),
            role_arn=self._role_arn,
            session_name=self._session_name,
            duration_seconds=self._duration_seconds,
            external_id=self._external_id,
            now=self._clock(),
            environ=self._environ,
        )

    async def _refresh(self) -> AwsCredentials:
        try:
            credentials, expiry = await trio.to_thread.run_sync(self._load, abandon_on_cancel=True)
        except CredentialsError:
            raise
        except Exception as exc:
            raise CredentialsError(f"could not assume {self._role_arn}: {type(exc).__name__}: {exc}") from exc

        lifetime = expiry - self._clock()
        margin = min(REFRESH_MARGIN, lifetime * REFRESH_FRACTION)
        self._current = credentials
        self._expiry = expiry
        self._refresh_at = expiry - max(margin, datetime.timedelta(0))
        self.refreshes += 1
        return credentials

    def _is_fresh(self) -> bool:
        return self._refresh_at is not None and self._clock() < self._refresh_at

    def _is_usable(self) -> bool:
        if self._expiry is None:
            return False
        margin = min(MINIMUM_REMAINING, (self._expiry - self._refresh_at) / 2) if self._refresh_at else MINIMUM_REMAINING
        return self._clock() < self._expiry - margin
