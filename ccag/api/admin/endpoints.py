"""``/admin/endpoints``, ``/admin/routing`` and ``/admin/capabilities`` (admins only).

* ``GET /admin/endpoints``: every endpoint with its health (state, cool-down,
  error and throttle counts, recent ones, time-to-first-byte EWMA, per model)
  and its discovery status; secrets are never shown.
* ``POST /admin/endpoints``: add an endpoint (the table of the
  ``endpoints`` setting, as JSON); ``PUT /admin/endpoints/{id}`` replaces
  one, ``DELETE`` removes it. Kept in the store; effective here at once and
  on other gateways at their next reload. Endpoints of the ``endpoints``
  setting (and ``default``) are read-only here.
* ``GET /admin/routing``; ``PUT /admin/routing/teams/{team}`` with
  ``{"endpoints", "strategy", "geography"}``; ``DELETE`` the same path.
* ``GET /admin/capabilities``: what Bedrock refused, per endpoint/model;
  ``POST`` ``{"key", "kind", "name", "seconds"}`` sets a refusal by hand;
  ``DELETE /admin/capabilities?key=&kind=&name=`` forgets one.
"""

from __future__ import annotations

from typing import Any

import trio

from ccag.api.admin.common import (
    Admin,
    Reply,
    as_handler,
    bad_request,
    body,
    conflict,
    no_such_route,
    not_found,
    path_id,
    query,
)
from ccag.api.router import Router
from ccag.bedrock import stored
from ccag.bedrock.endpoints import (
    DEFAULT_ENDPOINT_ID,
    TeamRoute,
    endpoint_document,
    parse_endpoint,
    parse_endpoints,
    parse_team_route,
    redacted,
)
from ccag.bedrock.wiring import reload_from_store
from ccag.errors import ConfigError
from ccag.server.types import Request

ENDPOINT_PREFIX = "/admin/endpoints/"
TEAM_ROUTE_PREFIX = "/admin/routing/teams/"

# An admin-set refusal may last at most a year; longer is a unit mistake.
MAX_VERDICT_SECONDS = 365 * 86400.0

_ENDPOINT_FIELDS = ("id", "region", "geo_prefix", "url", "control_url", "api", "priority",
                    "weight", "credentials", "models")


def _router(admin: Admin) -> Any:
    return admin.services.upstream


def _configured_ids(admin: Admin) -> set[str]:
    ids = {spec.id for spec in parse_endpoints(admin.services.config.endpoints)}
    return ids | {DEFAULT_ENDPOINT_ID}


async def _apply(admin: Admin) -> None:
    try:
        await reload_from_store(_router(admin), admin.services.config, admin.store)
    except (ConfigError, ValueError) as exc:
        raise bad_request(str(exc)) from None


async def list_endpoints(admin: Admin, request: Request) -> Reply:
    """``GET /admin/endpoints``."""
    await admin.admin(request)
    router = _router(admin)
    configured = _configured_ids(admin)
    view = router.snapshot(trio.current_time())
    for item in view:
        item["definition"] = redacted(endpoint_document(router.endpoint(item["id"]).spec))
        item["source"] = "config" if item["id"] in configured else "store"
    return Reply(200, {"endpoints": view, "home_geography": router.home_geography})


async def create_endpoint(admin: Admin, request: Request) -> Reply:
    """``POST /admin/endpoints``."""
    await admin.admin(request)
    try:
        spec = parse_endpoint(body(request, _ENDPOINT_FIELDS))
    except ConfigError as exc:
        raise bad_request(str(exc)) from None
    if spec.id in _router(admin).endpoint_ids or spec.id in _configured_ids(admin):
        raise conflict(f"an endpoint {spec.id!r} exists")
    now = admin.now()
    await admin.write(lambda connection: stored.save_endpoint(connection, spec, now))
    await _apply(admin)
    return Reply(201, redacted(endpoint_document(spec)))


async def endpoint_item(admin: Admin, request: Request) -> Reply:
    """``GET``, ``PUT``, ``DELETE /admin/endpoints/{id}``."""
    await admin.admin(request)
    endpoint_id, action = path_id(request, ENDPOINT_PREFIX)
    router = _router(admin)
    if action is not None or endpoint_id not in router.endpoint_ids:
        raise not_found(f"no endpoint {endpoint_id[:80]!r}")
    if request.method == "GET":
        item = next(i for i in router.snapshot(trio.current_time()) if i["id"] == endpoint_id)
        item["definition"] = redacted(endpoint_document(router.endpoint(endpoint_id).spec))
        return Reply(200, item)
    if endpoint_id in _configured_ids(admin):
        raise conflict(f"endpoint {endpoint_id!r} comes from the configuration; change it there")
    if request.method == "DELETE":
        if len(router.endpoint_ids) == 1:
            raise conflict("the last endpoint cannot be removed")
        users = sorted(team for team, route in router.rules.teams.items() if endpoint_id in route.endpoints)
        if users:
            raise conflict(f"endpoint {endpoint_id!r} is in the route of team(s) {', '.join(users)}")
        await admin.write(lambda connection: stored.delete_endpoint(connection, endpoint_id))
        await _apply(admin)
        return Reply(200, {"deleted": endpoint_id})

    document = body(request, _ENDPOINT_FIELDS)
    document.setdefault("id", endpoint_id)
    if document["id"] != endpoint_id:
        raise bad_request("id: an endpoint keeps its id; create a new one instead")
    try:
        spec = parse_endpoint(document)
    except ConfigError as exc:
        raise bad_request(str(exc)) from None
    now = admin.now()
    await admin.write(lambda connection: stored.save_endpoint(connection, spec, now))
    await _apply(admin)
    return Reply(200, redacted(endpoint_document(spec)))


def _route_document(route: TeamRoute) -> dict[str, Any]:
    return {"endpoints": list(route.endpoints), "strategy": route.strategy, "geography": route.geography}


async def show_routing(admin: Admin, request: Request) -> Reply:
    """``GET /admin/routing``."""
    await admin.admin(request)
    rules = _router(admin).rules
    return Reply(200, {
        "strategy": rules.strategy,
        "allow_cross_geography": rules.allow_cross_geography,
        "geography": _router(admin).home_geography,
        "teams": {team: _route_document(route) for team, route in sorted(rules.teams.items())},
    })


async def team_route_item(admin: Admin, request: Request) -> Reply:
    """``PUT``, ``DELETE /admin/routing/teams/{team}``."""
    await admin.admin(request)
    team, action = path_id(request, TEAM_ROUTE_PREFIX)
    if action is not None:
        raise no_such_route(request)
    if request.method == "DELETE":
        deleted = await admin.write(lambda connection: stored.delete_team_route(connection, team))
        if not deleted:
            raise not_found(f"team {team[:80]!r} has no stored route")
        await _apply(admin)
        return Reply(200, {"deleted": team})
    try:
        route = parse_team_route(body(request, ("endpoints", "strategy", "geography")), f"team {team!r}")
    except ConfigError as exc:
        raise bad_request(str(exc)) from None
    unknown = sorted(set(route.endpoints) - set(_router(admin).endpoint_ids))
    if unknown:
        raise bad_request(f"endpoints: unknown endpoint(s) {', '.join(unknown)}")
    now = admin.now()
    await admin.write(lambda connection: stored.save_team_route(connection, team, route, now))
    await _apply(admin)
    return Reply(200, {"team": team, **_route_document(route)})


async def capabilities(admin: Admin, request: Request) -> Reply:
    """``GET``, ``POST``, ``DELETE /admin/capabilities``."""
    await admin.admin(request)
    memory = admin.services.capabilities
    now = admin.now()
    if request.method == "GET":
        return Reply(200, {"verdicts": memory.snapshot(now)})
    if request.method == "DELETE":
        params = query(request)
        key, kind, name = params.get("key"), params.get("kind"), params.get("name")
        if not (key and kind and name) or not hasattr(memory, "forget"):
            raise bad_request("give key, kind and name as query parameters")
        if not memory.forget(key, kind, name):
            raise not_found("no such verdict")
        return Reply(200, {"forgotten": {"key": key, "kind": kind, "name": name}})

    document = body(request, ("key", "kind", "name", "seconds"))
    key, kind, name = document.get("key"), document.get("kind"), document.get("name")
    if not all(isinstance(value, str) and value for value in (key, kind, name)):
        raise bad_request("key, kind and name: required strings")
    if kind not in ("beta", "field"):
        raise bad_request('kind: must be "beta" or "field"')
    seconds = document.get("seconds", memory.ttl_seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_VERDICT_SECONDS:
        raise bad_request("seconds: a positive number of seconds, at most a year")
    if hasattr(memory, "override"):
        memory.override(key, kind, name, now, float(seconds))
    else:
        memory.remember(key, kind, name, now)
    return Reply(201, {"key": key, "kind": kind, "name": name, "seconds": seconds})


def register_endpoint_routes(router: Router, services: Any, sessions: Any, store: Any) -> None:
    """Add the ``/admin/endpoints``, ``/admin/routing`` and ``/admin/capabilities`` routes."""
    admin = Admin(services, sessions, store)
    router.add("GET", "/admin/endpoints", as_handler(admin, list_endpoints))
    router.add("POST", "/admin/endpoints", as_handler(admin, create_endpoint))
    item = as_handler(admin, endpoint_item)
    for method in ("GET", "PUT", "DELETE"):
        router.add_prefix(method, ENDPOINT_PREFIX, item)
    router.add("GET", "/admin/routing", as_handler(admin, show_routing))
    team_item = as_handler(admin, team_route_item)
    for method in ("PUT", "DELETE"):
        router.add_prefix(method, TEAM_ROUTE_PREFIX, team_item)
    handler = as_handler(admin, capabilities)
    for method in ("GET", "POST", "DELETE"):
        router.add(method, "/admin/capabilities", handler)
