"""Bedrock endpoints as the operator defines them, and team routing rules.

An endpoint is one place Claude can be reached: an id the operator chose, an
AWS region, the inference-profile prefix used there (which is also the
geography the data may travel to), how to authenticate, a priority and a
weight for the routing strategies, optional per-model application inference
profile ARNs, and the API spoken there: ``invoke`` (Bedrock Runtime
InvokeModel) or ``mantle`` (the Anthropic-native Messages API on
``bedrock-mantle``).

Definitions come from the ``endpoints`` setting (a list of TOML tables, or a
JSON string in the environment), from the store (``/admin/endpoints``), or,
when there are none, from the core settings as the one endpoint ``default``.
Pure: parsing and rendering only; nothing is connected here.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ccag.bedrock.facts import default_geo_prefix, geo_prefixes
from ccag.errors import ConfigError

DEFAULT_ENDPOINT_ID = "default"

INVOKE = "invoke"
MANTLE = "mantle"
API_KINDS = (INVOKE, MANTLE)

PRIORITY = "priority"
ROUND_ROBIN = "round_robin"
STICKY = "sticky"
STRATEGIES = (PRIORITY, ROUND_ROBIN, STICKY)

CREDENTIAL_TYPES = ("chain", "profile", "static", "assume_role", "api_key")

# Ids appear in metric labels, URLs and log lines: short and plain.
ENDPOINT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# The default priority sits mid-range so an operator can add endpoints both
# before and after the ones that do not say.
DEFAULT_PRIORITY = 100

# A weight beyond this is almost certainly a typo, and smooth weighted round
# robin keeps per-endpoint counters that grow with the weights.
MAX_WEIGHT = 1000

# AssumeRole accepts 900 s to the role's maximum; one hour is its default.
DEFAULT_ROLE_SECONDS = 3600
MIN_ROLE_SECONDS = 900
MAX_ROLE_SECONDS = 12 * 3600

# Keys of a credentials table whose values are secrets: never shown again.
SECRET_KEYS = frozenset({"secret_access_key", "session_token", "api_key"})
REDACTED = "***"

_ENDPOINT_KEYS = frozenset(
    {"id", "region", "geo_prefix", "url", "control_url", "api", "priority", "weight",
     "credentials", "models"}
)
_CREDENTIAL_KEYS = frozenset(
    {"type", "profile", "access_key_id", "secret_access_key", "session_token",
     "role_arn", "external_id", "session_name", "duration_seconds", "sts_url", "source",
     "api_key", "api_key_env"}
)
_TEAM_KEYS = frozenset({"endpoints", "strategy", "geography"})
_ROUTING_KEYS = frozenset({"strategy", "allow_cross_geography", "geography", "teams"})


@attrs.frozen
class CredentialSpec:
    """How an endpoint authenticates.

    Attributes:
        type: ``chain`` (botocore's default chain), ``profile`` (a named
            profile), ``static`` (keys given here), ``assume_role`` (STS
            AssumeRole from a source: the chain, ``profile`` or static keys)
            or ``api_key`` (a Bedrock API key sent as a bearer token).
    """

    type: str = "chain"
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str = "ccag"
    duration_seconds: int = DEFAULT_ROLE_SECONDS
    sts_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None


@attrs.frozen
class EndpointSpec:
    """One configured Bedrock endpoint.

    Attributes:
        id: the operator's short stable name (the ``endpoint_id`` label).
        region: the AWS region (and SigV4 signing region).
        geo_prefix: the inference profile prefix used there, which is also
            the geography requests sent there may be processed in.
        url: the runtime (or mantle) base URL; None for the public one.
        control_url: the control-plane URL for ListInferenceProfiles; None
            for ``https://bedrock.<region>.amazonaws.com``.
        api: ``invoke`` or ``mantle``.
        priority: lower is preferred by the ``priority`` strategy.
        weight: share of traffic under ``round_robin``, bias under ``sticky``.
        credentials: how to authenticate.
        models: client model name -> model id or ARN to call instead (an
            application inference profile, typically).
    """

    id: str
    region: str
    geo_prefix: str
    url: str | None = None
    control_url: str | None = None
    api: str = INVOKE
    priority: int = DEFAULT_PRIORITY
    weight: int = 1
    credentials: CredentialSpec = CredentialSpec()
    models: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def geography(self) -> str:
        return self.geo_prefix

    def runtime_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        if self.api == MANTLE:
            return f"https://bedrock-mantle.{self.region}.api.aws"
        return f"https://bedrock-runtime.{self.region}.amazonaws.com"

    def control_plane_url(self) -> str:
        if self.control_url:
            return self.control_url.rstrip("/")
        if self.url and not _is_aws_host(self.url):
            # A runtime URL outside AWS is a stand-in (a simulator, a proxy):
            # discovery asks it too, never AWS's own control plane.
            return self.url.rstrip("/")
        return f"https://bedrock.{self.region}.amazonaws.com"


def _is_aws_host(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))


@attrs.frozen
class TeamRoute:
    """Which endpoints a team uses and how.

    Attributes:
        endpoints: the endpoint ids the team may use; empty for all.
        strategy: None for the gateway's default strategy.
        geography: the geography the team's data must stay in; None for the
            gateway's home geography.
    """

    endpoints: tuple[str, ...] = ()
    strategy: str | None = None
    geography: str | None = None


@attrs.frozen
class RoutingRules:
    """The routing settings: default strategy, geography rule, team routes.

    Attributes:
        strategy: the strategy of teams that name none.
        allow_cross_geography: let a request go to an endpoint in another
            geography than its team's. Off by default: data stays put.
        geography: the home geography; None for the prefix of the
            highest-priority endpoint.
        teams: team name -> its route.
    """

    strategy: str = PRIORITY
    allow_cross_geography: bool = False
    geography: str | None = None
    teams: Mapping[str, TeamRoute] = attrs.field(factory=dict)


def json_setting(value: Any) -> Any:
    """A table setting: as the TOML file gives it, or JSON text from the environment."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    return value


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _string(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{key} must be a non-empty string")
    return value


def _integer(table: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"{key} must be an integer from {low} to {high}")
    return value


def _geography(value: Any, where: str, key: str) -> str:
    if value not in geo_prefixes():
        known = ", ".join(sorted(geo_prefixes()))
        raise _fail(where, f"{key} {value!r} is not one of {known}")
    return str(value)


def _unknown(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}")


def parse_credentials(table: Any, where: str) -> CredentialSpec:
    """A credentials table, checked."""
    if table is None:
        return CredentialSpec()
    if not isinstance(table, Mapping):
        raise _fail(where, "credentials must be a table")
    where = f"{where} credentials"
    _unknown(table, _CREDENTIAL_KEYS, where)
    kind = table.get("type", "chain")
    if kind not in CREDENTIAL_TYPES:
        raise _fail(where, f"type must be one of {', '.join(CREDENTIAL_TYPES)}")
    spec = CredentialSpec(
        type=kind,
        profile=_string(table, "profile", where),
        access_key_id=_string(table, "access_key_id", where),
        secret_access_key=_string(table, "secret_access_key", where),
        session_token=_string(table, "session_token", where),
        role_arn=_string(table, "role_arn", where),
        external_id=_string(table, "external_id", where),
        session_name=_string(table, "session_name", where, "ccag") or "ccag",
        duration_seconds=_integer(
            table, "duration_seconds", where, DEFAULT_ROLE_SECONDS, MIN_ROLE_SECONDS, MAX_ROLE_SECONDS
        ),
        sts_url=_string(table, "sts_url", where),
        api_key=_string(table, "api_key", where),
        api_key_env=_string(table, "api_key_env", where),
    )
    if kind == "profile" and not spec.profile:
        raise _fail(where, "type profile needs profile")
    if kind == "static" and not (spec.access_key_id and spec.secret_access_key):
        raise _fail(where, "type static needs access_key_id and secret_access_key")
    if kind == "assume_role" and not spec.role_arn:
        raise _fail(where, "type assume_role needs role_arn")
    if kind == "api_key" and not (spec.api_key or spec.api_key_env):
        raise _fail(where, "type api_key needs api_key or api_key_env")
    return spec


def parse_endpoint(table: Any, where: str = "endpoint") -> EndpointSpec:
    """One endpoint table, checked.

    Raises:
        ConfigError: naming the endpoint and the key at fault.
    """
    if not isinstance(table, Mapping):
        raise _fail(where, "must be a table")
    endpoint_id = table.get("id")
    if not isinstance(endpoint_id, str) or not ENDPOINT_ID_PATTERN.fullmatch(endpoint_id):
        raise _fail(where, "id must be 1-64 letters, digits, '.', '_' or '-'")
    where = f"endpoint {endpoint_id!r}"
    _unknown(table, _ENDPOINT_KEYS, where)

    region = _string(table, "region", where)
    if region is None:
        raise _fail(where, "region is required")
    prefix = table.get("geo_prefix") or default_geo_prefix(region)
    api = table.get("api", INVOKE)
    if api not in API_KINDS:
        raise _fail(where, f"api must be {' or '.join(API_KINDS)}")

    models = table.get("models") or {}
    if not isinstance(models, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in models.items()
    ):
        raise _fail(where, "models must map model names to model ids or ARNs")
    return EndpointSpec(
        id=endpoint_id,
        region=region,
        geo_prefix=_geography(prefix, where, "geo_prefix"),
        url=_string(table, "url", where),
        control_url=_string(table, "control_url", where),
        api=api,
        priority=_integer(table, "priority", where, DEFAULT_PRIORITY, 0, 1_000_000),
        weight=_integer(table, "weight", where, 1, 1, MAX_WEIGHT),
        credentials=parse_credentials(table.get("credentials"), where),
        models=dict(models),
    )


def parse_endpoints(tables: Iterable[Any] | None) -> list[EndpointSpec]:
    """The ``endpoints`` setting, checked; ids must be unique."""
    specs = [parse_endpoint(table, f"endpoints[{index}]") for index, table in enumerate(tables or ())]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise ConfigError(f"endpoints: the id {spec.id!r} is used twice")
        seen.add(spec.id)
    return specs


def parse_team_route(table: Any, where: str) -> TeamRoute:
    if not isinstance(table, Mapping):
        raise _fail(where, "must be a table")
    _unknown(table, _TEAM_KEYS, where)
    endpoint_ids = table.get("endpoints") or []
    if not isinstance(endpoint_ids, list) or not all(isinstance(i, str) for i in endpoint_ids):
        raise _fail(where, "endpoints must be a list of endpoint ids")
    strategy = table.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise _fail(where, f"strategy must be one of {', '.join(STRATEGIES)}")
    geography = table.get("geography")
    if geography is not None:
        geography = _geography(geography, where, "geography")
    return TeamRoute(tuple(endpoint_ids), strategy, geography)


def parse_routing(table: Any) -> RoutingRules:
    """The ``routing`` setting, checked."""
    if table is None:
        return RoutingRules()
    if not isinstance(table, Mapping):
        raise ConfigError("routing: must be a table")
    _unknown(table, _ROUTING_KEYS, "routing")
    strategy = table.get("strategy", PRIORITY)
    if strategy not in STRATEGIES:
        raise ConfigError(f"routing: strategy must be one of {', '.join(STRATEGIES)}")
    allow = table.get("allow_cross_geography", False)
    if not isinstance(allow, bool):
        raise ConfigError("routing: allow_cross_geography must be true or false")
    geography = table.get("geography")
    if geography is not None:
        geography = _geography(geography, "routing", "geography")
    teams = table.get("teams") or {}
    if not isinstance(teams, Mapping):
        raise ConfigError("routing: teams must be a table of team tables")
    return RoutingRules(
        strategy=strategy,
        allow_cross_geography=allow,
        geography=geography,
        teams={name: parse_team_route(route, f"routing team {name!r}") for name, route in teams.items()},
    )


def check_team_endpoints(rules: RoutingRules, endpoint_ids: Iterable[str]) -> None:
    """Refuse a team route that names an endpoint that does not exist."""
    known = set(endpoint_ids)
    for team, route in rules.teams.items():
        missing = sorted(set(route.endpoints) - known)
        if missing:
            raise ConfigError(f"routing team {team!r}: unknown endpoint(s) {', '.join(missing)}")


def endpoint_document(spec: EndpointSpec) -> dict[str, Any]:
    """The endpoint as a table that :func:`parse_endpoint` reads back; no secrets."""
    credentials = {
        name: value
        for name, value in attrs.asdict(spec.credentials).items()
        if value is not None and attrs.fields_dict(CredentialSpec)[name].default != value
        or name == "type"
    }
    return {
        "id": spec.id,
        "region": spec.region,
        "geo_prefix": spec.geo_prefix,
        "url": spec.url,
        "control_url": spec.control_url,
        "api": spec.api,
        "priority": spec.priority,
        "weight": spec.weight,
        "credentials": credentials,
        "models": dict(spec.models),
    }


def redacted(document: dict[str, Any]) -> dict[str, Any]:
    """An endpoint document with its secrets replaced, for showing."""
    shown = dict(document)
    credentials = dict(shown.get("credentials") or {})
    for key in SECRET_KEYS & set(credentials):
        credentials[key] = REDACTED
    shown["credentials"] = credentials
    return {key: value for key, value in shown.items() if value is not None}
