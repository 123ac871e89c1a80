"""Building the endpoint router at start, and keeping it current.

The endpoints are those of the ``endpoints`` setting plus those added through
``/admin/endpoints`` (kept in the store; an id in both is the setting's).
With none, the core settings (region, endpoint URL, credentials) make the one
endpoint ``default``, exactly as a single-endpoint gateway always worked.
Team routes likewise come from the ``routing`` setting and the store.

Background loops: model discovery at start and then hourly, and a reload of
the stored endpoints and routes so a change made on one gateway reaches the
others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ccag.anthropic.models import ModelCatalog
from ccag.bedrock.endpoints import (
    DEFAULT_ENDPOINT_ID,
    EndpointSpec,
    RoutingRules,
    check_team_endpoints,
    parse_endpoints,
    parse_routing,
)
from ccag.bedrock.facts import default_geo_prefix
from ccag.bedrock.router import EndpointRouter
from ccag.bedrock.stored import StoredCapabilities, load_endpoints, load_team_routes
from ccag.errors import ConfigError
from ccag.store import StoreError

logger = logging.getLogger(__name__)

# How often stored endpoints and team routes are read again: an admin change
# on another gateway takes effect here within this time.
RELOAD_SECONDS = 30.0

# Environment variables naming the control plane's URL (boto3's names).
CONTROL_URL_ENV_VARS = ("AWS_ENDPOINT_URL_BEDROCK", "AWS_ENDPOINT_URL")


def default_endpoint(
    config: Any, region: str, endpoint_url: str, explicit_url: bool, environ: Mapping[str, str]
) -> EndpointSpec:
    """The endpoint the core settings describe.

    Its control-plane URL is ``AWS_ENDPOINT_URL_BEDROCK`` (or
    ``AWS_ENDPOINT_URL``) when set; else, when the runtime URL was given
    explicitly (a stand-in such as the simulator serves both planes), that
    URL; else the public regional one.
    """
    control = next((environ[name] for name in CONTROL_URL_ENV_VARS if environ.get(name)), None)
    if control is None and explicit_url:
        control = endpoint_url
    return EndpointSpec(
        id=DEFAULT_ENDPOINT_ID,
        region=region,
        geo_prefix=config.geo_prefix or default_geo_prefix(region),
        url=endpoint_url,
        control_url=control,
    )


def merged(configured: list[EndpointSpec], stored: list[EndpointSpec]) -> list[EndpointSpec]:
    ids = {spec.id for spec in configured}
    return configured + [spec for spec in stored if spec.id not in ids]


def merged_rules(rules: RoutingRules, stored_routes: Mapping[str, Any]) -> RoutingRules:
    teams = dict(stored_routes)
    teams.update(rules.teams)
    return attrs.evolve(rules, teams=teams)


async def open_router(
    config: Any,
    store: Any,
    catalog: ModelCatalog,
    *,
    region: str,
    endpoint_url: str,
    explicit_url: bool,
    credentials: Any,
    environ: Mapping[str, str],
) -> EndpointRouter:
    """The router over the configured and stored endpoints.

    Raises:
        ConfigError: an endpoint or route is invalid.
    """
    configured = parse_endpoints(config.endpoints)
    rules = parse_routing(config.routing)
    stored = await store.run(load_endpoints, readonly=True)
    stored_routes = await store.run(load_team_routes, readonly=True)

    overrides: dict[str, Any] = {}
    bearers: dict[str, str] = {}
    if not configured:
        configured = [default_endpoint(config, region, endpoint_url, explicit_url, environ)]
        bearer = environ.get("AWS_BEARER_TOKEN_BEDROCK")
        if bearer:
            bearers[DEFAULT_ENDPOINT_ID] = bearer
        overrides[DEFAULT_ENDPOINT_ID] = credentials
    specs = merged(configured, stored)
    rules = merged_rules(rules, stored_routes)
    check_team_endpoints(rules, [spec.id for spec in specs])
    return EndpointRouter(
        specs,
        rules,
        catalog,
        environ=environ,
        connect_timeout=config.connect_timeout,
        pool_size=config.pool_size,
        first_byte_timeout=config.first_byte_timeout,
        credential_overrides=overrides,
        bearer_overrides=bearers,
    )


async def reload_from_store(router: EndpointRouter, config: Any, store: Any) -> None:
    """Apply the stored endpoints and routes (an admin change) to ``router``."""
    configured = parse_endpoints(config.endpoints)
    if not configured and DEFAULT_ENDPOINT_ID in router.endpoint_ids:
        configured = [router.endpoint(DEFAULT_ENDPOINT_ID).spec]
    stored = await store.run(load_endpoints, readonly=True)
    stored_routes = await store.run(load_team_routes, readonly=True)
    specs = merged(configured, stored)
    rules = merged_rules(parse_routing(config.routing), stored_routes)
    try:
        check_team_endpoints(rules, [spec.id for spec in specs])
    except ConfigError as exc:
        logger.warning("stored routing ignored: %s", exc)
        return
    if specs:
        router.replace(specs, rules)


async def run_reload_loop(router: EndpointRouter, config: Any, store: Any) -> None:
    while True:
        await trio.sleep(RELOAD_SECONDS)
        try:
            await reload_from_store(router, config, store)
        except (StoreError, ConfigError) as exc:
            logger.warning("endpoint reload from the store failed: %s", exc)


async def open_capabilities(config: Any, store: Any, nursery: trio.Nursery) -> StoredCapabilities:
    """The capability memory, loaded from the store and written back to it."""
    memory = StoredCapabilities(config.capability_memory, store)
    try:
        await memory.load(time.time())
    except StoreError as exc:
        logger.warning("capability verdicts not loaded: %s", exc)
    nursery.start_soon(memory.run_writer)
    return memory
