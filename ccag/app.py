"""Wire the gateway together and run it in one nursery.

``run_gateway`` builds every service from the configuration, starts the
background loops (key cache refresh, the bundled simulator when there are no
AWS credentials), then serves until ``shutdown`` is set, when the listener
stops, in-flight requests get their grace period and the loops stop.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ccag.anthropic.models import ModelCatalog
from ccag.api.admin import register_admin_routes
from ccag.api.admin.endpoints import register_endpoint_routes
from ccag.api.admin.spend import register_spend_routes
from ccag.api.count_tokens import CountTokensRoute
from ccag.api.debug import runtime_handler
from ccag.api.health import ReadyRoute, health, root
from ccag.api.messages import MessagesRoute
from ccag.api.metrics import metrics_handler
from ccag.api.model_list import ModelListRoute
from ccag.api.router import Router
from ccag.auth.keys import KeyCache, create_key
from ccag.auth.login import login_handler
from ccag.auth.sessions import SessionManager, ensure_bootstrap_admin
from ccag.bedrock.credentials import CredentialSource, has_credentials
from ccag.bedrock.endpoint import default_runtime_url, resolve_endpoint_url
from ccag.bedrock.endpoints import parse_endpoints, parse_routing
from ccag.bedrock.facts import apply_beta_overrides, shipped_models
from ccag.bedrock.router import EndpointRouter
from ccag.bedrock.wiring import open_capabilities, open_router, run_reload_loop
from ccag.config import Config
from ccag.errors import ApiError, ConfigError
from ccag.liveview import register_liveview
from ccag.server import open_listeners, serve
from ccag.services import Services
from ccag.spend.system import start_spend_system
from ccag.startup_log import startup_logger
from ccag.store import open_store
from ccag.telemetry import Telemetry
from ccag.websearch.settings import search_settings

logger = logging.getLogger("ccag")

DEFAULT_ENDPOINT_ID = "default"


@attrs.define
class Gateway:
    """The running gateway, as tests and the command line see it."""

    config: Config
    port: int
    services: Services
    simulator: Any | None
    store: Any
    sessions: Any


def simulator_wanted(config: Config, environ: Mapping[str, str]) -> bool:
    """Whether to serve from the bundled simulator instead of AWS."""
    if config.simulator == "on":
        return True
    if config.simulator == "off":
        return False
    if config.endpoints:
        # Endpoints carry credentials of their own: this is a real deployment
        # even on a host with no ambient AWS credentials.
        return False
    return not has_credentials(config.aws_profile, environ=environ)


# What a stream still running when the shutdown grace ends is told: Anthropic
# clients (Claude Code included) retry an overloaded_error.
SHUTDOWN_ERROR = ApiError(
    529, "The gateway is shutting down; retry the request.", "overloaded_error"
)


async def run_gateway(
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    shutdown: trio.Event | None = None,
    credentials: CredentialSource | None = None,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ccag until ``shutdown`` is set (or the task is cancelled).

    Args:
        config: the validated configuration.
        environ: the environment (``OTEL_*``, ``AWS_*``); default ``os.environ``.
        shutdown: set it to stop gracefully.
        credentials: AWS credentials to use instead of botocore's chain (tests
            pointing the gateway at a simulator of their own use this).
        task_status: receives the running :class:`Gateway`.
    """
    environ = os.environ if environ is None else environ
    search_settings(config)  # a web search setup that cannot work stops the start (ConfigError)
    if shutdown is None:
        shutdown = trio.Event()
    catalog = _load_catalog(config)
    # Endpoint and routing mistakes stop the start before anything else runs.
    parse_endpoints(config.endpoints)
    parse_routing(config.routing)
    # So does a port in use: bound before the simulator starts or the store is
    # opened (and migrated), so a failed start leaves nothing behind.
    listeners = await open_listeners(config)
    try:
        await _run_bound(config, environ, shutdown, credentials, catalog, listeners, task_status)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _run_bound(
    config: Config,
    environ: Mapping[str, str],
    shutdown: trio.Event,
    credentials: CredentialSource | None,
    catalog: ModelCatalog,
    listeners: list[trio.SocketListener],
    task_status: trio.TaskStatus[Gateway],
) -> None:
    """The rest of :func:`run_gateway`, once its port is bound."""
    use_simulator = credentials is None and simulator_wanted(config, environ)
    region = config.resolved_region

    async with trio.open_nursery() as nursery:
        simulator = None
        if use_simulator:
            from ccag.simulator import run_simulator
            from ccag.simulator.handler import SEARCH_PATH

            startup_logger.warning(
                "ccag is serving from the bundled Bedrock SIMULATOR, not AWS "
                "(%s); no call leaves this machine",
                "--simulator on" if config.simulator == "on" else "no AWS credentials found",
            )
            simulator = await nursery.start(run_simulator)
            endpoint_url = simulator.url
            region = simulator.region
            credentials = CredentialSource.static(simulator.access_key, simulator.secret_key)
            logger.info("simulator listening at %s", endpoint_url)
            if config.web_search_provider is None:
                # Web search in simulator mode stays on this machine too.
                config = config.replace(
                    web_search_provider="custom", web_search_url=endpoint_url + SEARCH_PATH
                )
        else:
            endpoint_url = resolve_endpoint_url(config.endpoint_url, region, environ)
            if credentials is None:
                credentials = CredentialSource.from_chain(profile=config.aws_profile)
            if config.endpoints:
                logger.info(
                    "ccag is serving from the configured Bedrock endpoints: %s",
                    ", ".join(str(table.get("id")) for table in config.endpoints),
                )
            else:
                logger.info("ccag is serving from Amazon Bedrock at %s", endpoint_url)

        store = await open_store(config.resolved_store)
        keys = KeyCache(store)
        await keys.refresh()
        sessions = SessionManager(store, config, keys)
        await ensure_bootstrap_admin(store, config, simulator_mode=use_simulator)
        if use_simulator:
            await _announce_demo_key(store, keys)
        nursery.start_soon(keys.run_refresh_loop, config.key_refresh)

        # Bedrock endpoints, routing and failover (ccag.bedrock.wiring).
        upstream = await open_router(
            config, store, catalog,
            region=region, endpoint_url=endpoint_url,
            # A runtime URL from a flag or AWS_ENDPOINT_URL_BEDROCK_RUNTIME is a
            # stand-in for Bedrock: its control plane (discovery) is the same
            # host, never the real AWS one.
            explicit_url=use_simulator or endpoint_url != default_runtime_url(region),
            credentials=credentials,
            environ=environ,
        )
        client = upstream
        nursery.start_soon(upstream.discovery.run_refresh_loop)
        await nursery.start(upstream.drainer.run)
        nursery.start_soon(run_reload_loop, upstream, config, store)
        telemetry = Telemetry(
            environ,
            canonical_models=catalog.canonical_names(),
            endpoint_ids=upstream.endpoint_ids,
            max_tool_names=config.metrics_max_tool_names,
        )
        nursery.start_soon(telemetry.run_otlp_export)
        upstream.endpoint_listeners.append(telemetry.allow_endpoints)
        spend = await start_spend_system(
            config, store, telemetry, load_json_file(config.models_file), nursery
        )
        services = Services(
            config=config,
            catalog=catalog,
            capabilities=await open_capabilities(config, store, nursery),
            upstream=upstream,
            keys=keys,
            telemetry=telemetry,
            geo_prefix=upstream.home_geography,
            spend=spend,
            sinks=[spend.sink],
        )

        nursery.start_soon(services.silence_watch.run)
        router = _build_router(services, sessions, store)
        try:
            async with trio.open_nursery() as front:
                port = await front.start(
                    functools.partial(
                        serve, router, config, shutdown=shutdown, listeners=listeners,
                        on_grace_expired=lambda: services.silence_watch.end_all(SHUTDOWN_ERROR),
                    )
                )
                scheme = "https" if config.tls_cert else "http"
                startup_logger.info("ccag listening on %s://%s:%d", scheme, config.host, port)
                task_status.started(Gateway(config, port, services, simulator, store, sessions))
            # serve returned: the listener is closed and in-flight requests
            # finished or ran out of grace. Only the background loops remain.
        finally:
            nursery.cancel_scope.cancel()
            await spend.aclose()  # every buffered spend record, before the store closes
            await _close(telemetry, store, client)


def _build_router(services: Services, sessions: Any, store: Any) -> Router:
    router = Router()
    router.add("POST", "/v1/messages", MessagesRoute(services))
    router.add("POST", "/v1/messages/count_tokens", CountTokensRoute(services))
    models = ModelListRoute(services)
    router.add("GET", "/v1/models", models)
    router.add_prefix("GET", "/v1/models/", models)
    router.add("GET", "/", root)
    # Claude Code's connectivity probe, older versions HEAD /, newer /api/hello.
    router.add("GET", "/api/hello", root)
    router.add("GET", "/health", health)

    async def readiness() -> dict[str, str]:
        results = {"credentials": await _credentials_state(services.upstream)}
        try:
            await store.ping()
            results["store"] = "ok"
        except Exception as exc:  # noqa: BLE001 - likewise
            results["store"] = f"unavailable: {type(exc).__name__}"
        return results

    router.add("GET", "/ready", ReadyRoute(readiness))

    async def metrics(request: Any, responder: Any) -> None:
        await metrics_handler(
            request, responder,
            telemetry=services.telemetry,
            authorize_admin=sessions.authorize_admin,
        )

    router.add("GET", "/metrics", metrics)

    async def runtime(request: Any, responder: Any) -> None:
        await runtime_handler(
            request, responder,
            authorize_admin=sessions.authorize_admin,
            requests_in_flight=lambda: services.telemetry._in_flight,
        )

    # Open fds, Trio tasks, memory: what leak checks compare (ccag.api.debug).
    router.add("GET", "/admin/debug/runtime", runtime)

    async def login(request: Any, responder: Any) -> None:
        await login_handler(request, responder, sessions, services.telemetry.auth_failure)

    router.add("POST", "/auth/login", login)
    register_admin_routes(router, services, sessions, store)
    register_spend_routes(router, services, sessions, store)
    register_endpoint_routes(router, services, sessions, store)
    services.sinks.append(register_liveview(router, services, sessions).record)
    return router


async def _credentials_state(upstream: EndpointRouter) -> str:
    """``ok`` when at least one endpoint can sign a request now.

    One usable endpoint is enough to serve: the router fails over to it.
    """
    failures = []
    for endpoint_id in upstream.endpoint_ids:
        endpoint = upstream.endpoint(endpoint_id)
        if endpoint.bearer_token or endpoint.credentials is None:
            return "ok"
        try:
            await endpoint.credentials.get()
            return "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in words
            failures.append(f"{endpoint_id}: {type(exc).__name__}")
    return "unavailable: " + ", ".join(failures or ["no endpoints"])


async def _announce_demo_key(store: Any, keys: KeyCache) -> None:
    """In simulator mode, make sure there is a key to try the gateway with."""
    if keys.count() > 0:
        return
    key = await create_key(store, "simulator-demo", user="demo")
    await keys.refresh()
    startup_logger.warning("simulator mode: created the API key %s (name simulator-demo)", key)


async def _close(telemetry: Any, store: Any, client: Any) -> None:
    with trio.CancelScope(shield=True):
        await client.aclose()
        await store.aclose()
        await telemetry.aclose()


def _load_catalog(config: Config) -> ModelCatalog:
    """The model table with the operator's files applied (ConfigError if bad)."""
    try:
        models = apply_beta_overrides(shipped_models(), load_json_file(config.betas_file))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ModelCatalog(models, load_json_file(config.models_file))


def load_json_file(path: str | None) -> dict[str, Any] | None:
    """An operator's JSON extension file, or None when not configured."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return document
