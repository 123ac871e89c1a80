"""Which Claude models an endpoint can serve, from ListInferenceProfiles.

A model AWS enables after ccag's table was written has no entry in it. The
control plane's ``GET /inference-profiles`` (paginated with ``maxResults``
and ``nextToken``) lists the profile ids the account can call, such as
``us.anthropic.claude-opus-9-20270101-v1:0``; a client name ``claude-opus-9``
or ``claude-opus-9-20270101`` is matched against them (the newest dated
version wins), so the new model works on the day it is enabled.

Each endpoint's list is fetched at start and every :data:`REFRESH_SECONDS`
by a background loop, and on demand, at most once per
:data:`MIN_REFETCH_SECONDS`, when a request names a model nobody knows; a
name that is still unknown is remembered as such for
:data:`NEGATIVE_TTL_SECONDS`, so a typo costs one listing, not one per
request. Matching is pure; fetching runs blocking HTTP in a worker thread,
through the proxy the environment names (``ccag.bedrock.blocking_http``).
"""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from ccag.bedrock.blocking_http import BlockingTarget, failure_text
from ccag.bedrock.errors import CredentialsError, UpstreamError
from ccag.bedrock.signing import bearer_auth, sign_request

logger = logging.getLogger(__name__)

# How often every endpoint's list is fetched again in the background.
REFRESH_SECONDS = 3600.0

# An unknown model name triggers a fetch at most this often per endpoint.
MIN_REFETCH_SECONDS = 60.0

# How long a name no endpoint offers stays "unknown" without a new fetch.
NEGATIVE_TTL_SECONDS = 300.0

# One page is at most 1000 profiles (Bedrock's maximum); an account has a
# few hundred. The page bound stops a misbehaving server from looping us.
PAGE_SIZE = 1000
MAX_PAGES = 20

# A listing is small JSON; anything this big is not one.
MAX_LISTING_BYTES = 8 * 1024 * 1024

# Seconds one page may take (the control plane answers in well under one).
FETCH_TIMEOUT_SECONDS = 10.0

# Names remembered as unknown per endpoint, so a client inventing names
# cannot grow memory.
MAX_NEGATIVE_NAMES = 1024

_VERSION_SUFFIX = re.compile(r"-v\d+(?::\d+)?$")
_DATE_SUFFIX = re.compile(r"-\d{8}$")
_PROVIDER = "anthropic."


@attrs.frozen
class DiscoveredModel:
    """A model one endpoint offers through a profile.

    Attributes:
        name: the Anthropic-style name (``claude-opus-9-20270101``).
        profile_id: the id to invoke (``us.anthropic.claude-...-v1:0``).
        base_model_id: the foundation model id (``anthropic.claude-...``).
    """

    name: str
    profile_id: str
    base_model_id: str


def models_in(profile_ids: Iterable[str], geo_prefix: str) -> list[DiscoveredModel]:
    """The Claude models among ``profile_ids`` offered under ``geo_prefix``."""
    found = []
    for profile_id in profile_ids:
        prefix, dot, base = profile_id.partition(".")
        if not dot or prefix != geo_prefix or not base.startswith(_PROVIDER):
            continue
        name = _VERSION_SUFFIX.sub("", base[len(_PROVIDER) :])
        found.append(DiscoveredModel(name.lower(), profile_id, base))
    return found


def match(name: str, models: Iterable[DiscoveredModel]) -> DiscoveredModel | None:
    """The model a client name means: exact, else the newest dated version."""
    stem = name.strip().lower()
    exact = None
    dated = []
    for model in models:
        if model.name == stem:
            exact = model
        elif _DATE_SUFFIX.sub("", model.name) == stem:
            dated.append(model)
    if exact is not None:
        return exact
    return max(dated, key=lambda m: m.name) if dated else None


def profile_ids_of(page: Any) -> tuple[list[str], str | None]:
    """The profile ids and next token of one ListInferenceProfiles page."""
    if not isinstance(page, dict):
        raise UpstreamError("ListInferenceProfiles answered something that is not an object")
    summaries = page.get("inferenceProfileSummaries") or []
    ids = [
        item["inferenceProfileId"]
        for item in summaries
        if isinstance(item, dict)
        and isinstance(item.get("inferenceProfileId"), str)
        and item.get("status", "ACTIVE") == "ACTIVE"
    ]
    token = page.get("nextToken")
    return ids, token if isinstance(token, str) and token else None


Fetch = Callable[[], Awaitable[list[str]]]


def _get_page(target: BlockingTarget, url: str, headers: list[tuple[str, str]]) -> Any:
    parts = urllib.parse.urlsplit(url)
    connection = target.connection(FETCH_TIMEOUT_SECONDS)
    path = parts.path + ("?" + parts.query if parts.query else "")
    try:
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        try:
            raw = response.read(MAX_LISTING_BYTES)
        finally:
            # A response the server will close keeps its own handle on the
            # socket, which closing the connection does not reach.
            response.close()
    except (OSError, http.client.HTTPException) as exc:
        # A proxy's refusal lands here too, as "Tunnel connection failed".
        where = target.describe(parts.netloc)
        raise UpstreamError(f"cannot reach {where}: {failure_text(exc)}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise UpstreamError(f"ListInferenceProfiles answered HTTP {response.status}")
    try:
        return json.loads(raw)
    except ValueError:
        raise UpstreamError("ListInferenceProfiles answered something that is not JSON") from None


def list_profiles_fetcher(
    control_url: str,
    region: str,
    credentials: Any,
    bearer_token: str | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Fetch:
    """A function fetching every profile id of one endpoint's account.

    Args:
        control_url: ``https://bedrock.<region>.amazonaws.com`` or a stand-in.
        region: the signing region.
        credentials: an object with ``async get()`` (unused with a bearer token).
        bearer_token: a Bedrock API key, if the endpoint uses one.
        environ: where the proxy variables are read, here, once
            (``os.environ`` if None).

    Raises:
        ConfigError: the proxy variable for the control URL is unusable.
    """
    base = urllib.parse.urlsplit(control_url.rstrip("/"))
    environ = os.environ if environ is None else environ
    target = _target_of(base, environ)

    async def fetch() -> list[str]:
        if target is None:
            # Reported on each fetch, as an unreachable one is, rather than
            # stopping the gateway: only discovery needs this URL.
            raise UpstreamError(f"control URL {control_url!r} is not an http(s) URL")

        ids: list[str] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = [("maxResults", str(PAGE_SIZE))]
            if token:
                params.append(("nextToken", token))
            query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
            url = f"{base.scheme}://{base.netloc}{base.path}/inference-profiles?{query}"
            headers = [("host", base.netloc)]
            if bearer_token is not None:
                signed = bearer_auth(headers, bearer_token)
            else:
                aws = await credentials.get()
                now = datetime.datetime.now(datetime.UTC)
                signed = sign_request("GET", url, headers, b"", aws, region, "bedrock", now)
            page = await trio.to_thread.run_sync(_get_page, target, url, signed, abandon_on_cancel=True)
            page_ids, token = profile_ids_of(page)
            ids.extend(page_ids)
            if token is None:
                return ids
        logger.warning("%s: ListInferenceProfiles still had pages after %d; using those read", control_url, MAX_PAGES)
        return ids

    return fetch


def _target_of(base: urllib.parse.SplitResult, environ: Mapping[str, str]) -> BlockingTarget | None:
    """Where the control URL's calls connect; None if it is not an http(s) URL."""
    try:
        port = base.port
    except ValueError:
        return None
    if base.scheme not in ("http", "https") or not base.hostname:
        return None
    return BlockingTarget.choose(base.scheme, base.hostname, port, environ)


@attrs.define
class _Listing:
    profile_ids: list[str] | None = None
    fetched_at: float | None = None
    attempted_at: float | None = None
    error: str | None = None
    unknown: dict[str, float] = attrs.Factory(dict)
    lock: trio.Lock = attrs.Factory(trio.Lock)


class Discovery:
    """Cached profile listings per endpoint, fetched off the hot path.

    Args:
        clock: seconds, monotonic (``trio.current_time`` by default).
    """

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._fetchers: dict[str, Fetch] = {}
        self._listings: dict[str, _Listing] = {}

    def set_endpoint(self, endpoint_id: str, fetch: Fetch) -> None:
        self._fetchers[endpoint_id] = fetch
        self._listings.setdefault(endpoint_id, _Listing())

    def remove_endpoint(self, endpoint_id: str) -> None:
        self._fetchers.pop(endpoint_id, None)
        self._listings.pop(endpoint_id, None)

    def profile_ids(self, endpoint_id: str) -> list[str] | None:
        """What the endpoint listed last, or None when it never answered."""
        listing = self._listings.get(endpoint_id)
        return None if listing is None else listing.profile_ids

    async def refresh(self, endpoint_id: str) -> None:
        """Fetch one endpoint's listing now; failures are logged and kept."""
        fetch = self._fetchers.get(endpoint_id)
        listing = self._listings.get(endpoint_id)
        if fetch is None or listing is None:
            return
        async with listing.lock:
            listing.attempted_at = self._clock()
            try:
                ids = await fetch()
            except (UpstreamError, CredentialsError) as exc:
                listing.error = str(exc)
                logger.warning("endpoint %s: model discovery failed: %s", endpoint_id, exc)
                return
            listing.profile_ids = ids
            listing.fetched_at = self._clock()
            listing.error = None
            listing.unknown.clear()

    async def refresh_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for endpoint_id in list(self._fetchers):
                nursery.start_soon(self.refresh, endpoint_id)

    async def run_refresh_loop(self, interval: float = REFRESH_SECONDS) -> None:
        """Refresh every endpoint now and then every ``interval`` seconds."""
        while True:
            await self.refresh_all()
            await trio.sleep(interval)

    async def lookup(self, endpoint_id: str, name: str, geo_prefix: str) -> DiscoveredModel | None:
        """The model ``name`` on one endpoint, fetching once if it is unknown."""
        listing = self._listings.get(endpoint_id)
        if listing is None:
            return None
        if listing.lock.locked():
            # A fetch (the one at start, typically) is under way: its answer
            # is worth the wait, and must not be pre-empted by a negative.
            async with listing.lock:
                pass
        found = self._match(listing, name, geo_prefix)
        if found is not None:
            return found

        now = self._clock()
        key = name.strip().lower()
        if listing.unknown.get(key, 0.0) > now:
            return None
        recently = listing.attempted_at is not None and now - listing.attempted_at < MIN_REFETCH_SECONDS
        if not recently:
            await self.refresh(endpoint_id)
            found = self._match(listing, name, geo_prefix)
            if found is not None:
                return found
        if len(listing.unknown) >= MAX_NEGATIVE_NAMES:
            listing.unknown.clear()
        listing.unknown[key] = self._clock() + NEGATIVE_TTL_SECONDS
        return None

    def _match(self, listing: _Listing, name: str, geo_prefix: str) -> DiscoveredModel | None:
        if listing.profile_ids is None:
            return None
        return match(name, models_in(listing.profile_ids, geo_prefix))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {
            endpoint_id: {
                "profiles": None if listing.profile_ids is None else len(listing.profile_ids),
                "fetched_seconds_ago": None if listing.fetched_at is None else round(now - listing.fetched_at, 1),
                "error": listing.error,
            }
            for endpoint_id, listing in self._listings.items()
        }
