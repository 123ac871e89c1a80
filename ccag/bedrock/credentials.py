"""AWS credentials for signing, refreshed ahead of expiry off the event loop.

botocore owns the credential chain (environment, shared config and
credentials files with profiles, SSO, assume-role, credential_process,
container and instance roles) and the refresh of temporary credentials. Both
can block: reading files, running a process, calling STS, SSO or the instance
metadata service. So botocore is only ever called in a worker thread, and
:class:`CredentialSource` keeps the current frozen credentials with their
expiry so that the usual ``get()`` is a clock reading and a comparison.

Refresh starts :data:`REFRESH_MARGIN` before expiry. While one refresh runs,
other requests keep signing with the still-valid credentials instead of
queueing behind it; only credentials closer to expiry than
:data:`MINIMUM_REMAINING` make a request wait.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping

import botocore.credentials
import botocore.session
import trio
from botocore.utils import InstanceMetadataFetcher

from ccag.bedrock.errors import CredentialsError
from ccag.bedrock.signing import AwsCredentials

# botocore's own advisory refresh window for temporary credentials: inside it,
# get_frozen_credentials() refreshes, so starting ours at the same time means
# one refresh per lifetime instead of one per request.
REFRESH_MARGIN = datetime.timedelta(minutes=15)

# Credentials with less than this left are not used while a refresh is under
# way: a request signed now may take this long to reach Bedrock.
MINIMUM_REMAINING = datetime.timedelta(minutes=1)

# The instance metadata service answers in milliseconds on EC2; off EC2 the
# address does not answer at all. One short attempt decides without hanging.
METADATA_PROBE_TIMEOUT = 1.0

# The Bedrock API key variable that boto3 reads for bearer authentication.
BEARER_TOKEN_ENV_VAR = "AWS_BEARER_TOKEN_BEDROCK"

# Container credentials are served over HTTP; their presence is decided from
# these variables so that the check itself sends nothing.
CONTAINER_ENV_VARS = (
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)

# What a loader returns: the credentials and when they expire (None: never).
Loaded = tuple[AwsCredentials, "datetime.datetime | None"]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CredentialSource:
    """Hands out current AWS credentials without blocking the event loop.

    Args:
        load: a blocking function returning fresh credentials and their
            expiry (an aware datetime, or None for credentials that do not
            expire). It runs in a worker thread.
        refresh_margin: how long before expiry a refresh starts.
        clock: the current time, aware; injected by tests.
    """

    def __init__(
        self,
        load: Callable[[], Loaded],
        *,
        refresh_margin: datetime.timedelta = REFRESH_MARGIN,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._load = load
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._current: AwsCredentials | None = None
        self._expiry: datetime.datetime | None = None
        self._refresh_lock = trio.Lock()

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> CredentialSource:
        """A source that always hands out the same credentials."""
        credentials = AwsCredentials(access_key, secret_key, token)
        source = cls(lambda: (credentials, None))
        source._current = credentials
        return source

    @classmethod
    def from_botocore(
        cls,
        credentials: botocore.credentials.Credentials,
        *,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> CredentialSource:
        """A source over botocore credentials, refreshable ones included."""
        return cls(lambda: _freeze(credentials), clock=clock)

    @classmethod
    def from_chain(cls, profile: str | None = None) -> CredentialSource:
        """A source over botocore's standard credential chain.

        Nothing is resolved here: the chain runs in a worker thread at the
        first :meth:`get`, because any of its providers may block.

        Args:
            profile: a named profile from the shared config files; None for
                ``AWS_PROFILE`` or the default chain.
        """
        resolved: list[botocore.credentials.Credentials] = []

        def load() -> Loaded:
            if not resolved:
                session = botocore.session.Session(profile=profile)
                credentials = session.get_credentials()
                if credentials is None:
                    raise CredentialsError(
                        "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where a role is attached"
                    )
                resolved.append(credentials)
            return _freeze(resolved[0])

        return cls(load)

    async def get(self) -> AwsCredentials:
        """The credentials to sign the next request with.

        Raises:
            CredentialsError: no credentials could be loaded or refreshed.
        """
        current = self._current
        if current is not None and self._is_fresh():
            return current

        # Someone else is refreshing and what we hold is still good to sign
        # with: do not queue behind a possibly slow STS or SSO call.
        if current is not None and self._refresh_lock.locked() and self._is_usable():
            return current

        async with self._refresh_lock:
            if self._current is not None and self._is_fresh():
                return self._current
            return await self._refresh()

    async def _refresh(self) -> AwsCredentials:
        try:
            # abandon_on_cancel: a cancelled request must not wait for STS;
            # botocore keeps what the abandoned thread fetched for next time.
            credentials, expiry = await trio.to_thread.run_sync(
                self._load, abandon_on_cancel=True
            )
        except CredentialsError:
            raise
        except Exception as exc:
            raise CredentialsError(
                f"could not load AWS credentials: {type(exc).__name__}: {exc}"
            ) from exc

        self._current = credentials
        self._expiry = expiry
        return credentials

    def _is_fresh(self) -> bool:
        return self._expiry is None or self._clock() < self._expiry - self._refresh_margin

    def _is_usable(self) -> bool:
        return self._expiry is None or self._clock() < self._expiry - MINIMUM_REMAINING


def _freeze(credentials: botocore.credentials.Credentials) -> Loaded:
    """Frozen credentials and their expiry; refreshes if botocore thinks it due."""
    frozen = credentials.get_frozen_credentials()
    expiry = getattr(credentials, "_expiry_time", None)
    if expiry is not None and expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token), expiry


def bearer_token(environ: Mapping[str, str]) -> str | None:
    """The Bedrock API key from ``AWS_BEARER_TOKEN_BEDROCK``, if set."""
    return environ.get(BEARER_TOKEN_ENV_VAR) or None


def has_credentials(
    profile: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    probe_instance_metadata: bool = True,
) -> bool:
    """Whether Bedrock could be called: a Bedrock API key or AWS credentials.

    Decides whether ``simulator = auto`` runs the simulator. Blocking (files,
    perhaps a ``credential_process``, at most one instance metadata request
    of :data:`METADATA_PROBE_TIMEOUT`): call it at start-up or from a worker
    thread. Container credentials count when their variables are set, without
    a request; the instance metadata service is asked only when
    ``probe_instance_metadata`` is true and ``AWS_EC2_METADATA_DISABLED`` is
    not ``true``.

    Raises:
        CredentialsError: the profile or the config files are broken.
    """
    environ = os.environ if environ is None else environ
    if bearer_token(environ):
        return True

    try:
        session = botocore.session.Session(profile=profile)
        resolver = session.get_component("credential_provider")
        for network_provider in ("container-role", "iam-role"):
            resolver.remove(network_provider)
        if resolver.load_credentials() is not None:
            return True
    except Exception as exc:
        raise CredentialsError(
            f"could not read the AWS configuration: {type(exc).__name__}: {exc}"
        ) from exc

    if any(environ.get(name) for name in CONTAINER_ENV_VARS):
        return True

    metadata_disabled = environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
    if not probe_instance_metadata or metadata_disabled:
        return False
    fetcher = InstanceMetadataFetcher(timeout=METADATA_PROBE_TIMEOUT, num_attempts=1)
    provider = botocore.credentials.InstanceMetadataProvider(iam_role_fetcher=fetcher)
    return provider.load() is not None
