"""``/admin/spend``, ``/admin/budgets``, ``/admin/limits``, ``/admin/pricing``.

- ``GET /admin/spend?by=user|team|key|model|day&since=7d&until=...``: totals
  per group over a time range (``since``/``until``: a duration back from now
  such as ``7d``, ``12h``, or an ISO date or time; default the last 7 days).
  Admins may filter with ``user=``, ``team=``, ``key_id=``; members see only
  their own spend (a team key's member sees that key's).
- ``/admin/budgets``: list (with what each has spent), create, and
  ``/admin/budgets/{id}`` show, change (PATCH) or delete. Members may list the
  budgets that apply to them, without ``webhook_url``; a team budget's total
  is the whole team's and is shown to members as ``team_spent_usd``.
- ``/admin/limits``: the defaults and every override;
  ``PUT``/``DELETE /admin/limits/{key|team}/{key id or team name}``.
- ``/admin/pricing``: the prices in force; ``PUT``/``DELETE
  /admin/pricing/{model}`` set or remove an override (USD per million
  tokens: ``input``, ``output``, ``cache_read``, ``cache_write`` (5-minute
  TTL), and optionally ``cache_write_1h``, which is otherwise
  :data:`~ccag.spend.pricing.CACHE_WRITE_1H_PER_5M` times ``cache_write``).

Every change is applied to this gateway at once and reaches the others at
their next reload (``spend_refresh`` seconds). Prices apply to calls recorded
after the change; recorded costs never change.
"""

from __future__ import annotations

import datetime
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

import attrs

from ccag.api.admin.common import (
    Admin,
    Reply,
    as_handler,
    bad_request,
    body,
    conflict,
    forbidden,
    missing_subject,
    no_such_route,
    not_found,
    path_id,
    query,
)
from ccag.api.router import Router
from ccag.auth.keys import Principal
from ccag.ratelimit import Limits
from ccag.server.types import Request
from ccag.spend import budgets as budget_store
from ccag.spend import limits as limit_store
from ccag.spend import pricing as price_store
from ccag.spend.budgets import Budget
from ccag.spend.queries import GROUPS, spend_by
from ccag.spend.system import SpendSystem
from ccag.store import Connection, Store, StoreConflict, directory
from ccag.store.identity import find_keys

BUDGETS_PREFIX = "/admin/budgets/"
LIMITS_PREFIX = "/admin/limits/"
PRICING_PREFIX = "/admin/pricing/"

DEFAULT_SPAN_SECONDS = 7 * 86400.0

# What GET /admin/spend understands; anything else is a typo worth a 400.
SPEND_PARAMETERS = frozenset({"by", "since", "until", "user", "team", "key_id"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# A price above this per million tokens is almost surely a unit mistake
# (per thousand, or cents).
MAX_PRICE_PER_MILLION = 100_000.0

# The fields of a price override, in the order price_store.Price takes them;
# the optional one last (derived from cache_write when left out).
PRICE_FIELDS = ("input", "output", "cache_read", "cache_write")
OPTIONAL_PRICE_FIELDS = ("cache_write_1h",)

# A budget names a user or team; this bounds what the name adds to the store,
# logs and webhook bodies (directory names are far shorter).
MAX_BUDGET_NAME_CHARS = 200

# Alert thresholds: a handful is all anyone reads, and each is a fraction of
# the limit; beyond ten times the limit an alert is a unit mistake.
MAX_THRESHOLDS = 10
MAX_THRESHOLD_FRACTION = 10.0

# Rates (requests or tokens a minute): a billion a minute is beyond any
# gateway; more is a typo, and would not fit the store's integer column.
MAX_RATE_PER_MINUTE = 10**9

# Budget limits in USD: a billion dollars a period is beyond any real budget;
# more is a typo (and loses cents to float precision).
MAX_BUDGET_USD = 1e9

# Spend queries reach at most ten years back (durations) and only into the
# Unix era (dates); earlier is a typo and cannot be formatted as RFC 3339.
MAX_QUERY_SPAN_SECONDS = 10 * 365 * 86400.0
EARLIEST_QUERY_TIME = 0.0

BUDGET_FIELDS = (
    "scope",
    "name",
    "period",
    "limit_usd",
    "policy",
    "thresholds",
    "throttle_at",
    "throttle_rpm",
    "webhook_url",
)


def parse_moment(text: str, now: float, field: str) -> float:
    """``7d``-style durations back from now, or an ISO date or time (UTC if
    no zone is given)."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        span = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if not span <= MAX_QUERY_SPAN_SECONDS:
            raise bad_request(f"{field}: {text[:80]!r} is more than ten years back")
        return now - span
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad_request(
            f"{field}: {text[:80]!r} is neither a duration such as 7d or 12h nor an ISO date"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        timestamp = moment.timestamp()
    except (OverflowError, ValueError):
        timestamp = math.nan
    if not EARLIEST_QUERY_TIME <= timestamp <= now + MAX_QUERY_SPAN_SECONDS:
        raise bad_request(
            f"{field}: {text[:80]!r} is out of range (from 1970 to ten years from now)"
        )
    return timestamp


def _number(
    document: Mapping[str, Any],
    field: str,
    *,
    integer: bool = False,
    required: bool = False,
    maximum: float | None = None,
) -> Any:
    value = document.get(field)
    if value is None:
        if required:
            raise bad_request(f"{field}: required")
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    # A JSON integer may have any number of digits: compare before any float
    # conversion (math.isfinite overflows on such an int).
    if not is_number or (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        # Not a number, negative or infinite (JSON 1e400 parses as inf): say
        # what is accepted, in the field's own unit.
        what = "finite number of dollars" if field.endswith("_usd") else "finite number"
        accepted = "from 0" if maximum is None else f"from 0 to {maximum:,.0f}"
        raise bad_request(f"{field}: must be a {what} {accepted}, not {value!r:.80}")
    if maximum is not None and value > maximum:
        raise bad_request(f"{field}: must be at most {maximum:,.0f}")
    if integer and value != int(value):
        raise bad_request(f"{field}: must be a whole number")
    return int(value) if integer else float(value)


def _choice(document: Mapping[str, Any], field: str, choices: tuple[str, ...]) -> str:
    value = document.get(field)
    if value not in choices:
        raise bad_request(
            f"{field}: must be one of {', '.join(choices)}, not {value!r:.80}"
        )
    return str(value)


class SpendRoutes:
    """The spend, budget, limit and pricing routes over one :class:`SpendSystem`."""

    def __init__(self, spend: SpendSystem) -> None:
        self.spend = spend

    async def _changed(self) -> None:
        await self.spend.refresh()

    # -- spend ----------------------------------------------------------------

    async def report(self, admin: Admin, request: Request) -> Reply:
        """``GET /admin/spend``."""
        principal = await admin.principal(request)
        params = query(request)
        unknown = sorted(set(params) - SPEND_PARAMETERS)
        if unknown:
            raise bad_request(
                f"unknown query parameter(s) {', '.join(unknown)}; "
                f"use {', '.join(sorted(SPEND_PARAMETERS))}"
            )
        by = params.get("by", "user")
        if by not in GROUPS:
            raise bad_request(
                f"by: must be one of {', '.join(GROUPS)}, not {by[:40]!r}"
            )
        now = admin.now()
        since = (
            parse_moment(params["since"], now, "since")
            if params.get("since")
            else now - DEFAULT_SPAN_SECONDS
        )
        until = (
            parse_moment(params["until"], now, "until")
            if params.get("until")
            else now + 1.0
        )
        if until <= since:
            raise bad_request("until must be after since")

        filters = {
            "user": params.get("user") or None,
            "team": params.get("team") or None,
            "key_id": params.get("key_id") or None,
        }
        if not principal.is_admin:
            filters = _own_spend(principal)

        # Buffered records count too: write them first (best effort).
        await self.spend.recorder.flush()
        rows = await admin.read(lambda c: spend_by(c, by, since, until, **filters))
        total = round(sum(row["cost_usd"] for row in rows), 6)
        return Reply(
            200,
            {
                "by": by,
                "since": budget_store.rfc3339(since),
                "until": budget_store.rfc3339(until),
                "rows": rows,
                "total_cost_usd": total,
            },
        )

    # -- budgets --------------------------------------------------------------

    async def list_budgets(self, admin: Admin, request: Request) -> Reply:
        """``GET /admin/budgets``."""
        principal = await admin.principal(request)
        budgets = await admin.read(budget_store.load_budgets)
        now = self.spend.clock()
        if not principal.is_admin:
            budgets = [
                b
                for b in budgets
                if (b.scope, b.name)
                in (("user", principal.user), ("team", principal.team))
            ]
        documents = [self._status(b, now) for b in budgets]
        if not principal.is_admin:
            documents = [_member_view(document) for document in documents]
        return Reply(200, {"budgets": documents})

    def _status(self, budget: Budget, now: float) -> dict[str, Any]:
        # The tracker's totals, if it knows the budget yet; else none spent.
        known = {b.id for b in self.spend.budgets.budgets}
        if budget.id in known:
            return self.spend.budgets.status(budget, now).document()
        start, end = budget_store.period_bounds(budget.period, now)
        return budget_store.BudgetStatus(budget, 0.0, start, end).document()

    async def _save_budget(self, admin: Admin, budget: Budget) -> None:
        """Store a new or changed budget (409 if it would repeat another's
        scope, name and period) and apply it here at once."""
        now = admin.now()
        try:
            await admin.write(lambda c: budget_store.save_budget(c, budget, now))
        except StoreConflict:
            raise conflict(
                f"a {budget.period} budget for {budget.scope} {budget.name!r} exists"
            ) from None
        await self._changed()

    async def create_budget(self, admin: Admin, request: Request) -> Reply:
        """``POST /admin/budgets``."""
        await admin.admin(request)
        document = body(request, BUDGET_FIELDS)
        budget = _budget_from(document, "budget_" + secrets.token_hex(8))
        await admin.read(lambda c: _require_budget_subject(c, budget, admin.now()))
        await self._save_budget(admin, budget)
        return Reply(201, self._status(budget, self.spend.clock()))

    async def budget_item(self, admin: Admin, request: Request) -> Reply:
        """``GET``, ``PATCH``, ``DELETE /admin/budgets/{id}``."""
        await admin.admin(request)
        budget_id, action = path_id(request, BUDGETS_PREFIX)
        if action is not None:
            raise no_such_route(request)
        found = await admin.read(lambda c: budget_store.get_budget(c, budget_id))
        if found is None:
            raise not_found(f"no budget with id {budget_id[:80]!r}")
        if request.method in ("GET", "HEAD"):
            return Reply(200, self._status(found, self.spend.clock()))
        if request.method == "DELETE":
            await admin.write(lambda c: budget_store.delete_budget(c, budget_id))
            await self._changed()
            return Reply(200, {"deleted": budget_id})
        changes = body(request, BUDGET_FIELDS)
        merged = {**found.document(), **changes}
        budget = _budget_from(merged, budget_id)
        if "scope" in changes or "name" in changes:
            await admin.read(lambda c: _require_budget_subject(c, budget, admin.now()))
        await self._save_budget(admin, budget)
        return Reply(200, self._status(budget, self.spend.clock()))

    # -- rate limits ----------------------------------------------------------

    async def list_limits(self, admin: Admin, request: Request) -> Reply:
        """``GET /admin/limits``."""
        await admin.admin(request)
        overrides = await admin.read(limit_store.load_limits)
        limiter = self.spend.limiter
        return Reply(
            200,
            {
                "defaults": {
                    "key": {
                        "rpm": limiter.key_default.rpm,
                        "tpm": limiter.key_default.tpm,
                    },
                    "team": {
                        "rpm": limiter.team_default.rpm,
                        "tpm": limiter.team_default.tpm,
                    },
                },
                "gateway_instances": limiter.instances,
                "overrides": [
                    limit_store.limits_document(scope, name, limits)
                    for (scope, name), limits in sorted(overrides.items())
                ],
            },
        )

    async def limit_item(self, admin: Admin, request: Request) -> Reply:
        """``PUT``, ``DELETE /admin/limits/{key|team}/{name}``."""
        await admin.admin(request)
        scope, given = path_id(request, LIMITS_PREFIX)
        if scope not in limit_store.SCOPES or not given:
            raise not_found(
                "limits live at /admin/limits/key/{key id} and /admin/limits/team/{team}"
            )
        name: str = given
        if request.method == "DELETE":
            # An override of a key or team deleted since may still be removed
            # by the name it was stored under.
            stored_name = await admin.read(
                lambda c: _limit_subject(c, scope, name, admin.now(), required=False)
            )
            removed = await admin.write(
                lambda c: limit_store.delete_limits(c, scope, stored_name)
                or limit_store.delete_limits(c, scope, name)
            )
            if not removed:
                raise not_found(f"no rate limit override for {scope} {name[:80]!r}")
            await self._changed()
            return Reply(200, {"deleted": {"scope": scope, "name": name}})
        document = body(request, ("rpm", "tpm"))
        limits = Limits(
            _number(document, "rpm", integer=True, maximum=MAX_RATE_PER_MINUTE),
            _number(document, "tpm", integer=True, maximum=MAX_RATE_PER_MINUTE),
        )
        now = admin.now()
        subject = await admin.read(
            lambda c: _limit_subject(c, scope, name, now, required=True)
        )
        await admin.write(
            lambda c: limit_store.save_limits(c, scope, subject, limits, now)
        )
        await self._changed()
        return Reply(200, limit_store.limits_document(scope, subject, limits))

    # -- pricing --------------------------------------------------------------

    async def list_pricing(self, admin: Admin, request: Request) -> Reply:
        """``GET /admin/pricing``."""
        await admin.principal(request)
        return Reply(
            200,
            {"unit": "USD per million tokens", "models": self.spend.prices.listing()},
        )

    async def pricing_item(self, admin: Admin, request: Request) -> Reply:
        """``PUT``, ``DELETE /admin/pricing/{model}``."""
        await admin.admin(request)
        model, action = path_id(request, PRICING_PREFIX)
        if action is not None:
            raise no_such_route(request)
        if request.method == "DELETE":
            removed = await admin.write(lambda c: price_store.delete_override(c, model))
            if not removed:
                raise not_found(f"no price override for {model[:80]!r}")
            await self._changed()
            return Reply(200, {"deleted": model})
        document = body(request, PRICE_FIELDS + OPTIONAL_PRICE_FIELDS)
        price = price_store.Price(
            *(
                _number(document, field, required=True, maximum=MAX_PRICE_PER_MILLION)
                for field in PRICE_FIELDS
            )
        )
        cache_write_1h = _number(
            document, "cache_write_1h", maximum=MAX_PRICE_PER_MILLION
        )
        if cache_write_1h is not None:
            price = attrs.evolve(price, cache_write_1h=cache_write_1h)
        now = admin.now()
        await admin.write(lambda c: price_store.save_override(c, model, price, now))
        await self._changed()
        return Reply(200, {"model": model, "overridden": True, **price.document()})


def _limit_subject(
    connection: Connection, scope: str, name: str, now: float, *, required: bool
) -> str:
    """The name a limit override is stored under: a key's id (given its id
    or the name of a live key) or a team's name.

    Raises:
        ApiError: 400 if ``required`` and no such key or team exists.
    """
    if scope == "key":
        keys = find_keys(connection, name)
        if len(keys) == 1:
            return keys[0].id
        if required:
            raise bad_request(
                f"key {name[:80]!r} does not exist (give a key's id or a live key's name)"
            )
        return name
    team = directory.get_team(connection, name, now)
    if team is not None:
        return team.name
    if required:
        raise missing_subject("team", name)
    return name


def _require_budget_subject(connection: Connection, budget: Budget, now: float) -> None:
    """A 400 unless the user or team a budget names exists."""
    if budget.scope == "team":
        found: object = directory.get_team(connection, budget.name, now)
    else:
        found = directory.get_user(connection, budget.name, now)
    if found is None:
        raise bad_request(f"{budget.scope} {budget.name[:80]!r} does not exist")


def _member_view(document: dict[str, Any]) -> dict[str, Any]:
    """A budget as a member sees it.

    The webhook URL is the admins' (it may carry a secret) and is left out. A
    team budget limits the whole team's spending, so its total is the team's:
    it is shown as ``team_spent_usd`` so nobody reads it as their own.
    """
    view = {name: value for name, value in document.items() if name != "webhook_url"}
    if view["scope"] == "team":
        view["team_spent_usd"] = view.pop("spent_usd")
    return view


def _own_spend(principal: Principal) -> dict[str, str | None]:
    if principal.user is not None:
        return {"user": principal.user, "team": None, "key_id": None}
    if principal.key_id is not None:
        return {"user": None, "team": None, "key_id": principal.key_id}
    raise forbidden("this credential has no user or key whose spend could be shown")


def _budget_from(document: Mapping[str, Any], budget_id: str) -> Budget:
    """The budget a create or PATCH body describes, every field checked.

    Raises:
        ApiError: 400 naming the first field that is missing or wrong.
    """
    scope = _choice(document, "scope", budget_store.SCOPES)
    name = document.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_BUDGET_NAME_CHARS:
        raise bad_request("name: the user's or team's name is required")
    period = _choice(document, "period", budget_store.PERIODS)
    policy = _choice(document, "policy", budget_store.POLICIES)
    limit_usd = _number(document, "limit_usd", required=True, maximum=MAX_BUDGET_USD)

    thresholds = document.get("thresholds")
    if thresholds is None:
        thresholds = list(budget_store.DEFAULT_THRESHOLDS)
    if (
        not isinstance(thresholds, list)
        or not thresholds
        or len(thresholds) > MAX_THRESHOLDS
        or not all(
            isinstance(t, (int, float))
            and not isinstance(t, bool)
            and 0 < t <= MAX_THRESHOLD_FRACTION
            for t in thresholds
        )
    ):
        raise bad_request(
            f"thresholds: a list of up to {MAX_THRESHOLDS} fractions of the limit,"
            " such as [0.8, 1.0]"
        )

    throttle_rpm = _number(
        document, "throttle_rpm", integer=True, maximum=MAX_RATE_PER_MINUTE
    )
    throttle_at = _number(document, "throttle_at", maximum=MAX_THRESHOLD_FRACTION)
    if policy == "throttle" and throttle_rpm is None:
        raise bad_request("throttle_rpm: required for the throttle policy")

    webhook_url = document.get("webhook_url")
    if webhook_url is not None and (
        not isinstance(webhook_url, str)
        or not webhook_url.startswith(("http://", "https://"))
    ):
        raise bad_request("webhook_url: must be an http:// or https:// URL")

    return Budget(
        id=budget_id,
        scope=scope,
        name=name,
        period=period,
        limit_usd=limit_usd,
        policy=policy,
        thresholds=tuple(sorted(float(t) for t in thresholds)),
        throttle_at=throttle_at,
        throttle_rpm=throttle_rpm,
        webhook_url=webhook_url,
    )


def register_spend_routes(
    router: Router, services: Any, sessions: Any, store: Store
) -> None:
    """Add the spend, budget, limit and pricing routes to ``router``."""
    admin = Admin(services, sessions, store)
    routes = SpendRoutes(services.spend)

    router.add("GET", "/admin/spend", as_handler(admin, routes.report))
    router.add("GET", "/admin/budgets", as_handler(admin, routes.list_budgets))
    router.add("POST", "/admin/budgets", as_handler(admin, routes.create_budget))
    budget_item = as_handler(admin, routes.budget_item)
    for method in ("GET", "PATCH", "DELETE"):
        router.add_prefix(method, BUDGETS_PREFIX, budget_item)
    router.add("GET", "/admin/limits", as_handler(admin, routes.list_limits))
    limit_item = as_handler(admin, routes.limit_item)
    for method in ("PUT", "DELETE"):
        router.add_prefix(method, LIMITS_PREFIX, limit_item)
    router.add("GET", "/admin/pricing", as_handler(admin, routes.list_pricing))
    pricing_item = as_handler(admin, routes.pricing_item)
    for method in ("PUT", "DELETE"):
        router.add_prefix(method, PRICING_PREFIX, pricing_item)
