"""Several Bedrock endpoints behind the one ``services.upstream``.

:class:`EndpointRouter` holds one upstream per configured endpoint (an
:class:`~ccag.bedrock.upstream.Upstream` for InvokeModel, a
:class:`~ccag.bedrock.mantle.MantleUpstream` for ``bedrock-mantle``), the
health board, the round-robin state and the model discovery. It answers the
three questions of the failover loop (:mod:`ccag.bedrock.failover`): which
endpoints, in what order, may serve this team and user; what the model is
called on one endpoint; and, through a thin recording wrapper, how each
attempt went.

For the routes that need just one endpoint (count_tokens) it keeps the
narrow interface of a single upstream (``endpoint_id``, ``capability_key``,
``count_tokens``): counts go to the preferred endpoint of either kind, or
to a mantle endpoint for models runtime CountTokens does not serve.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import botocore.session
import trio

from ccag.anthropic.models import ONE_MILLION_SUFFIX, ModelCatalog, ResolvedModel
from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.stream import BedrockStreamTranslator
from ccag.anthropic.translate import BedrockRequest
from ccag.bedrock import facts
from ccag.bedrock.client import BedrockClient
from ccag.bedrock.credentials import CredentialSource
from ccag.bedrock.discovery import Discovery, list_profiles_fetcher, models_in
from ccag.bedrock.drainer import Drainer
from ccag.bedrock.endpoints import (
    MANTLE,
    CredentialSpec,
    EndpointSpec,
    RoutingRules,
    TeamRoute,
)
from ccag.bedrock.errors import CredentialsError, UpstreamConnectError, UpstreamError
from ccag.bedrock.mantle import MANTLE_SIGNING_NAME, MantleUpstream
from ccag.bedrock.routing import (
    HealthBoard,
    RoundRobin,
    by_priority,
    eligible,
    order_for,
)
from ccag.bedrock.signing import AwsCredentials
from ccag.bedrock.sts import AssumedRoleCredentials, default_sts_url
from ccag.bedrock.upstream import Upstream
from ccag.errors import ApiError

logger = logging.getLogger(__name__)

# Statuses after which the endpoint is cooled down: throttles and its own
# failures. Client errors say nothing about the endpoint's health.
UNHEALTHY_STATUSES = frozenset({429}) | frozenset(range(500, 600))

NO_TEAM_ROUTE = TeamRoute()


@attrs.frozen
class Plan:
    """The endpoints one request may try, in order, and why others not.

    Attributes:
        order: healthy endpoints in strategy order, then cooling ones by
            soonest recovery (a last resort: a cool-down is a preference).
        refused: (endpoint id, reason) of endpoints this request may not use.
        geography: the geography the request must stay in.
        model_key: the key its health is kept under.
    """

    order: tuple[EndpointSpec, ...]
    refused: tuple[tuple[str, str], ...]
    geography: str
    model_key: str
    cooling: Mapping[str, float]


@attrs.define
class RoutedEndpoint:
    spec: EndpointSpec
    upstream: Any
    credentials: Any
    bearer_token: str | None


def _blocking_source(spec: CredentialSpec) -> Callable[[], AwsCredentials]:
    """The AssumeRole caller's own credentials, loaded in a worker thread."""
    if spec.access_key_id and spec.secret_access_key:
        static = AwsCredentials(spec.access_key_id, spec.secret_access_key, spec.session_token)
        return lambda: static

    def from_chain() -> AwsCredentials:
        credentials = botocore.session.Session(profile=spec.profile).get_credentials()
        if credentials is None:
            raise CredentialsError("no AWS credentials to assume the role with")
        frozen = credentials.get_frozen_credentials()
        return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    return from_chain


def build_credentials(
    spec: EndpointSpec, environ: Mapping[str, str]
) -> tuple[Any, str | None]:
    """The credential source and bearer token one endpoint signs with."""
    credentials = spec.credentials
    if credentials.type == "api_key":
        token = credentials.api_key or environ.get(credentials.api_key_env or "")
        if not token:
            raise CredentialsError(f"endpoint {spec.id}: {credentials.api_key_env} is not set")
        return None, token
    if credentials.type == "static":
        assert credentials.access_key_id and credentials.secret_access_key
        source = CredentialSource.static(
            credentials.access_key_id, credentials.secret_access_key, credentials.session_token
        )
        return source, None
    if credentials.type == "assume_role":
        assert credentials.role_arn
        return (
            AssumedRoleCredentials(
                _blocking_source(credentials),
                role_arn=credentials.role_arn,
                sts_url=credentials.sts_url or default_sts_url(spec.region),
                region=spec.region,
                session_name=credentials.session_name,
                duration_seconds=credentials.duration_seconds,
                external_id=credentials.external_id,
                environ=environ,
            ),
            None,
        )
    return CredentialSource.from_chain(profile=credentials.profile), None


class _RecordingUpstream:
    """One endpoint's upstream for one attempt: records health as it goes.

    A 2xx head counts as a success with its time to first byte; a throttle,
    a 5xx or a failure before the head cools the endpoint down for the model.
    What happens after the head (a stream breaking) is not counted here.
    """

    def __init__(self, router: EndpointRouter, endpoint: RoutedEndpoint, model_key: str) -> None:
        self._router = router
        self._endpoint = endpoint
        self._model_key = model_key
        self.endpoint_id = endpoint.spec.id
        self.region = endpoint.spec.region
        self.geo_prefix = endpoint.spec.geo_prefix
        self.api = endpoint.spec.api

    def capability_key(self, model_id: str) -> str:
        return str(self._endpoint.upstream.capability_key(model_id))

    def stream_translator(self, requested_model: str, observer: ResponseObserver) -> Any:
        upstream = self._endpoint.upstream
        if hasattr(upstream, "stream_translator"):
            return upstream.stream_translator(requested_model, observer)
        return BedrockStreamTranslator(requested_model, observer)

    @asynccontextmanager
    async def invoke(self, request: BedrockRequest) -> AsyncIterator[Any]:
        health = self._router.health
        started = trio.current_time()
        head_seen = False
        try:
            async with self._endpoint.upstream.invoke(request) as response:
                head_seen = True
                now = trio.current_time()
                if response.status < 300:
                    health.record_success(self.endpoint_id, self._model_key, now - started, now)
                elif response.status in UNHEALTHY_STATUSES:
                    kind = "throttled" if response.status == 429 else "server_error"
                    health.record_failure(self.endpoint_id, self._model_key, kind, now)
                yield response
        except UpstreamError as exc:
            if not head_seen:
                kind = "connect_error" if isinstance(exc, UpstreamConnectError) else type(exc).__name__
                health.record_failure(self.endpoint_id, self._model_key, kind, trio.current_time())
            raise

    def count_tokens(self, model: ResolvedModel, body: bytes) -> Any:
        return self._endpoint.upstream.count_tokens(model, body)


class EndpointRouter:
    """Every configured endpoint, their health, and how requests pick one.

    Args:
        specs: the endpoints.
        rules: strategies, geography rule and team routes.
        catalog: the model table.
        environ: where ``api_key_env`` values and the proxy variables are read.
        connect_timeout, pool_size, first_byte_timeout: client settings.
        credential_overrides: endpoint id -> a ready credential source
            (the default endpoint's, or a test's).
        health: the health board (a fresh one by default).
    """

    def __init__(
        self,
        specs: Sequence[EndpointSpec],
        rules: RoutingRules,
        catalog: ModelCatalog,
        *,
        environ: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        pool_size: int = 256,
        first_byte_timeout: float = 300.0,
        credential_overrides: Mapping[str, Any] | None = None,
        bearer_overrides: Mapping[str, str] | None = None,
        health: HealthBoard | None = None,
    ) -> None:
        if not specs:
            raise ValueError("an EndpointRouter needs at least one endpoint")
        self.rules = rules
        self.catalog = catalog
        self.health = health or HealthBoard()
        self.discovery = Discovery()
        # Finishes streamed bodies off the request path; app.py runs it.
        self.drainer = Drainer()
        self._environ = os.environ if environ is None else environ
        self._client_settings = (connect_timeout, pool_size, first_byte_timeout)
        self._credential_overrides = dict(credential_overrides or {})
        self._bearer_overrides = dict(bearer_overrides or {})
        self._round_robin = RoundRobin()
        self._endpoints: dict[str, RoutedEndpoint] = {}
        # The endpoints by priority, sorted when they change rather than on
        # every request (each request's plan and model key read them).
        self._by_priority: tuple[EndpointSpec, ...] = ()
        self._retired: list[RoutedEndpoint] = []
        # Called with the endpoint ids after each replace (telemetry labels).
        self.endpoint_listeners: list[Callable[[list[str]], None]] = []
        for spec in specs:
            self._add(spec)

    # -- endpoints ------------------------------------------------------------

    def _add(self, spec: EndpointSpec) -> None:
        connect_timeout, pool_size, first_byte_timeout = self._client_settings
        if spec.id in self._credential_overrides or spec.id in self._bearer_overrides:
            credentials = self._credential_overrides.get(spec.id)
            bearer = self._bearer_overrides.get(spec.id)
        else:
            credentials, bearer = build_credentials(spec, self._environ)
        is_mantle = spec.api == MANTLE
        client = BedrockClient(
            spec.runtime_url(),
            spec.region,
            credentials,
            service=MANTLE_SIGNING_NAME if is_mantle else "bedrock",
            connect_timeout=connect_timeout,
            pool_size=pool_size,
            bearer_token=bearer,
            environ=self._environ,
            drainer=self.drainer,
        )
        kind = MantleUpstream if is_mantle else Upstream
        upstream = kind(
            endpoint_id=spec.id,
            region=spec.region,
            geo_prefix=spec.geo_prefix,
            client=client,
            first_byte_timeout=first_byte_timeout,
        )
        self._endpoints[spec.id] = RoutedEndpoint(spec, upstream, credentials, bearer)
        self._sort_endpoints()
        fetch = list_profiles_fetcher(
            spec.control_plane_url(), spec.region, credentials, bearer, environ=self._environ
        )
        self.discovery.set_endpoint(spec.id, fetch)

    def replace(self, specs: Sequence[EndpointSpec], rules: RoutingRules | None = None) -> None:
        """Switch to a new set of endpoints (an admin change); health stays."""
        if not specs:
            raise ValueError("at least one endpoint is needed")
        wanted = {spec.id: spec for spec in specs}
        for endpoint_id in list(self._endpoints):
            current = self._endpoints[endpoint_id]
            if wanted.get(endpoint_id) != current.spec:
                self._retired.append(self._endpoints.pop(endpoint_id))
                self.discovery.remove_endpoint(endpoint_id)
                self._sort_endpoints()
        for spec in specs:
            if spec.id not in self._endpoints:
                self._add(spec)
        if rules is not None:
            self.rules = rules
        for listener in self.endpoint_listeners:
            listener(self.endpoint_ids)

    def _sort_endpoints(self) -> None:
        specs = [endpoint.spec for endpoint in self._endpoints.values()]
        self._by_priority = tuple(by_priority(specs))

    @property
    def specs(self) -> list[EndpointSpec]:
        return list(self._by_priority)

    @property
    def endpoint_ids(self) -> list[str]:
        return [spec.id for spec in self.specs]

    def endpoint(self, endpoint_id: str) -> RoutedEndpoint:
        return self._endpoints[endpoint_id]

    @property
    def home_geography(self) -> str:
        """The geography of teams that name none."""
        return self.rules.geography or self._by_priority[0].geo_prefix

    # -- the single-upstream interface (count_tokens) -------------------------

    def _preferred_invoke(self) -> RoutedEndpoint | None:
        for spec in self.specs:
            if spec.api != MANTLE:
                return self._endpoints[spec.id]
        return None

    @property
    def endpoint_id(self) -> str:
        preferred = self._preferred_invoke()
        return preferred.spec.id if preferred else self.specs[0].id

    @property
    def geo_prefix(self) -> str:
        return self.home_geography

    def capability_key(self, model_id: str) -> str:
        return f"{self.endpoint_id}/{model_id}"

    def _counting_endpoint(self, model: ResolvedModel) -> RoutedEndpoint:
        """The endpoint that counts tokens for ``model``, without failover.

        The preferred endpoint, whatever its kind; but when the facts say
        runtime CountTokens does not serve the model, the first mantle
        endpoint, where AWS sends those counts.
        """
        preferred = self._by_priority[0]
        if preferred.api != MANTLE and not model.facts.count_tokens:
            preferred = next((spec for spec in self._by_priority if spec.api == MANTLE), preferred)
        return self._endpoints[preferred.id]

    @asynccontextmanager
    async def count_tokens(self, model: ResolvedModel, body: bytes) -> AsyncIterator[Any]:
        """Count on :meth:`_counting_endpoint`; yield its CountTokens-shaped answer.

        Raises:
            UpstreamError: the endpoint could not be reached, or does not
                serve the model (the count route then estimates).
        """
        counter = self._counting_endpoint(model)
        if counter.spec.api == MANTLE:
            # Mantle takes the model by the name this endpoint calls it
            # (its geographic prefix, its overrides), as a Messages call would.
            try:
                model = await self.resolve(counter.spec.id, model.requested)
            except ApiError as error:
                raise UpstreamError(f"{counter.spec.id} does not serve {model.requested}: {error}") from None
        async with counter.upstream.count_tokens(model, body) as response:
            yield response

    def invoke(self, request: BedrockRequest) -> Any:
        """InvokeModel on the preferred InvokeModel endpoint, without failover.

        For callers that relay Bedrock's event stream themselves (the web
        search loop); ``/v1/messages`` goes through the failover loop.
        """
        preferred = self._preferred_invoke() or self._endpoints[self.specs[0].id]
        return _RecordingUpstream(self, preferred, request.model_id).invoke(request)

    def stream_translator(self, requested_model: str, observer: ResponseObserver) -> Any:
        return BedrockStreamTranslator(requested_model, observer)

    def model_label(self, name: str) -> str:
        """The metrics label of a client's model name (bounded: ``other`` if unknown)."""
        key = self.model_key(name)
        return key if key in self.catalog.canonical_names() else facts.unknown_model_facts().canonical

    # -- routing --------------------------------------------------------------

    def model_key(self, name: str) -> str:
        """The health key of a client's model name: its canonical name if known."""
        try:
            return self.catalog.resolve(name, self.home_geography).canonical
        except ApiError:
            return name.strip().lower().removesuffix(ONE_MILLION_SUFFIX)

    def plan(self, team: str | None, user: str | None, model_name: str, now: float) -> Plan:
        """The endpoints a request may try, in order."""
        route = self.rules.teams.get(team or "", NO_TEAM_ROUTE)
        geography = route.geography or self.home_geography
        candidates = eligible(
            self._by_priority,
            allowed_ids=route.endpoints,
            geography=geography,
            allow_cross_geography=self.rules.allow_cross_geography,
        )
        model_key = self.model_key(model_name)
        cooling = {
            spec.id: self.health.cooling_left(spec.id, model_key, now)
            for spec in candidates.endpoints
        }
        healthy = [spec for spec in candidates.endpoints if cooling[spec.id] == 0.0]
        resting = sorted(
            (spec for spec in candidates.endpoints if cooling[spec.id] > 0.0),
            key=lambda spec: (cooling[spec.id], spec.priority, spec.id),
        )
        strategy = route.strategy or self.rules.strategy
        ordered = order_for(strategy, healthy, user=user, round_robin=self._round_robin)
        return Plan(
            tuple(ordered + resting),
            candidates.refused,
            geography,
            model_key,
            {key: value for key, value in cooling.items() if value > 0},
        )

    def attempt_upstream(self, endpoint_id: str, model_key: str) -> _RecordingUpstream:
        return _RecordingUpstream(self, self._endpoints[endpoint_id], model_key)

    async def resolve(self, endpoint_id: str, name: str) -> ResolvedModel:
        """The model ``name`` on one endpoint: override, table, or discovery.

        Raises:
            ApiError: 404 when neither the table nor the endpoint's
                inference profiles know it; 400 when the table knows it but
                not under this endpoint's prefix.
        """
        spec = self._endpoints[endpoint_id].spec
        try:
            model = self.catalog.resolve(name, spec.geo_prefix)
        except ApiError as error:
            if error.status != 404 or len(name) > 256:
                raise
            model = await self._discovered(spec, name, error)
        override = spec.models.get(name) or spec.models.get(model.canonical)
        if override:
            model = attrs.evolve(model, bedrock_id=override)
        return model

    async def _discovered(self, spec: EndpointSpec, name: str, not_found: ApiError) -> ResolvedModel:
        one_million = name.strip().lower().endswith(ONE_MILLION_SUFFIX)
        stem = name.strip()[: -len(ONE_MILLION_SUFFIX)] if one_million else name.strip()
        found = await self.discovery.lookup(spec.id, stem, spec.geo_prefix)
        if found is None:
            raise not_found
        return ResolvedModel(
            requested=name,
            canonical=facts.unknown_model_facts().canonical,
            bedrock_id=found.profile_id,
            base_model_id=found.base_model_id,
            one_million=one_million,
            facts=facts.unknown_model_facts(),
        )

    # -- views ----------------------------------------------------------------

    def list_models(self) -> list[dict[str, str]]:
        """``/v1/models`` entries: what the endpoints list, else the table."""
        listed: dict[str, str] = {}
        for endpoint in self._endpoints.values():
            ids = self.discovery.profile_ids(endpoint.spec.id)
            if ids is None:
                continue
            for model in models_in(ids, endpoint.spec.geo_prefix):
                listed.setdefault(model.base_model_id.lower(), model.name)
        table = self.catalog.list_models()
        if not listed:
            return table

        served = []
        known_ids = set()
        for entry in table:
            bedrock_id = _bedrock_id_of(self.catalog, entry["id"])
            known_ids.add(bedrock_id)
            if bedrock_id in listed:
                served.append(entry)
        for base_id, name in sorted(listed.items()):
            if base_id not in known_ids:
                served.append({"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"})
        return served

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Each endpoint with its health per model, for ``GET /admin/endpoints``."""
        health = self.health.snapshot(now)
        discovery = self.discovery.snapshot()
        view = []
        for spec in self.specs:
            models = health.get(spec.id, {})
            cooling = [model for model, state in models.items() if state["state"] == "cooling"]
            ewmas = [state["ttfb_ewma_ms"] for state in models.values() if state["ttfb_ewma_ms"] is not None]
            view.append({
                "id": spec.id,
                "region": spec.region,
                "geo_prefix": spec.geo_prefix,
                "api": spec.api,
                "priority": spec.priority,
                "weight": spec.weight,
                "state": "cooling" if cooling else "healthy",
                "cooling_models": cooling,
                "errors": sum(state["errors"] for state in models.values()),
                "throttles": sum(state["throttles"] for state in models.values()),
                "recent_errors": sum(state["recent_errors"] for state in models.values()),
                "recent_throttles": sum(state["recent_throttles"] for state in models.values()),
                "ttfb_ewma_ms": round(sum(ewmas) / len(ewmas), 1) if ewmas else None,
                "models": models,
                "discovery": discovery.get(spec.id),
            })
        return view

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for endpoint in [*self._endpoints.values(), *self._retired]:
                await endpoint.upstream.client.aclose()


def _bedrock_id_of(catalog: ModelCatalog, name: str) -> str:
    for prefix in sorted(facts.geo_prefixes()):
        try:
            return catalog.resolve(name, prefix).base_model_id.lower()
        except ApiError:
            continue
    return ""

