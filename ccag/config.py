"""One typed configuration, built and validated once at start.

Every setting is declared once in ``SETTINGS``. From that one table come the
``ccag serve`` flags, the ``CCAG_*`` environment variables and the keys of the
optional TOML file. Precedence: flag, then environment, then file, then the
default. Unknown file keys and bad values are refused at start with a message
that names the setting.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ccag.bedrock.endpoints import json_setting
from ccag.errors import ConfigError


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


def _boolean(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@attrs.frozen
class Setting:
    """One configuration value: its name, type, default and meaning."""

    name: str
    kind: type
    default: Any
    help: str
    check: Callable[[Any], Any] | None = None

    @property
    def env_var(self) -> str:
        return "CCAG_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _default_store() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "ccag", "ccag.sqlite3")


SETTINGS: tuple[Setting, ...] = (
    # Inbound.
    Setting("host", str, "127.0.0.1", "address to listen on"),
    Setting("port", int, 8080, "port to listen on (0 picks a free one)", _port),
    Setting("tls_cert", str, None, "PEM certificate; enables TLS with ALPN h2/http1.1"),
    Setting("tls_key", str, None, "PEM private key for --tls-cert"),
    Setting("max_header_bytes", int, 64 * 1024, "largest request head accepted", _positive),
    Setting(
        "max_body_bytes", int, 32 * 1024 * 1024,
        "largest request body accepted (Claude Code's own limit)", _positive,
    ),
    Setting(
        "request_timeout", float, 60.0,
        "seconds a request may take to arrive completely", _positive,
    ),
    Setting(
        "keepalive_timeout", float, 75.0,
        "seconds an idle keep-alive connection is kept", _positive,
    ),
    Setting(
        "h2_max_concurrent_streams", int, 128,
        "HTTP/2 streams a client may open at once on one connection", _positive,
    ),
    Setting("write_timeout", float, 60.0, "seconds a client may leave a response unread before it is dropped", _positive),
    Setting(
        "shutdown_grace", float, 30.0,
        "seconds in-flight requests get to finish after SIGTERM", _not_negative,
    ),
    # Outbound.
    Setting("region", str, None, "AWS region of Bedrock (default: AWS_REGION, else us-east-1)"),
    Setting(
        "endpoint_url", str, None,
        "Bedrock Runtime URL (default: AWS_ENDPOINT_URL_BEDROCK_RUNTIME, "
        "AWS_ENDPOINT_URL, else https://bedrock-runtime.<region>.amazonaws.com)",
    ),
    Setting("aws_profile", str, None, "named AWS profile for credentials"),
    Setting(
        "geo_prefix", str, None,
        "inference profile prefix: us, eu, apac, au, jp, us-gov or global "
        "(default: from the region)",
    ),
    Setting("connect_timeout", float, 10.0, "seconds to connect to Bedrock", _positive),
    Setting(
        "first_byte_timeout", float, 300.0,
        "seconds Bedrock may take to answer a request", _positive,
    ),
    Setting(
        "upstream_idle_timeout", float, 300.0,
        "seconds a stream from Bedrock may stay silent before it is ended", _positive,
    ),
    Setting(
        "ping_interval", float, 10.0,
        "seconds of upstream silence before a ping event goes to the client", _positive,
    ),
    Setting("pool_size", int, 256, "idle connections kept per Bedrock host", _positive),
    Setting(
        "capability_memory", float, 3600.0,
        "seconds a rejected beta or field is remembered per model", _positive,
    ),
    Setting("models_file", str, None, "JSON file extending the model table"),
    Setting("endpoints", object, None, "Bedrock endpoints: [[endpoints]] tables (id, region, geo_prefix, api, priority, weight, credentials, models) or their JSON", json_setting),
    Setting("routing", object, None, "routing: {strategy, allow_cross_geography, geography, teams = {NAME = {endpoints, strategy, geography}}} or its JSON", json_setting),
    Setting("betas_file", str, None, "JSON file overriding the beta allowlist"),
    # Simulator.
    Setting(
        "simulator", str, "auto",
        "auto (when no AWS credentials), on or off: run against the bundled simulator",
    ),
    # Store and keys.
    Setting("store", str, None, "SQLite path or postgres:// URL (default: per-user file)"),
    Setting("key_refresh", float, 5.0, "seconds between key cache refreshes", _positive),
    Setting("key_rpm_limit", int, None, "requests per minute per API key (unset: unlimited; 0 blocks)", _not_negative),
    Setting("key_tpm_limit", int, None, "input+output tokens per minute per API key (unset: unlimited; 0 blocks)", _not_negative),
    Setting("team_rpm_limit", int, None, "requests per minute per team (unset: unlimited; 0 blocks)", _not_negative),
    Setting("team_tpm_limit", int, None, "input+output tokens per minute per team (unset: unlimited; 0 blocks)", _not_negative),
    Setting("gateway_instances", int, 1, "gateways sharing the store; each enforces ceil(limit / N) of every rate limit", _positive),
    Setting("spend_batch_size", int, 500, "spend records written per transaction", _positive),
    Setting("spend_flush_interval", float, 5.0, "seconds between spend record writes (a crash loses at most this much)", _positive),
    Setting("spend_refresh", float, 30.0, "seconds between reloads of rate limits, prices and budget totals from the store", _positive),
    Setting("spend_quarantine_file", str, None, "JSON-lines file for spend records the store refuses (default: next to the SQLite file)"),
    Setting("budget_webhook_url", str, None, "webhook for budget notices of budgets without their own URL"),
    # Administration.
    Setting("admin_username", str, "admin", "bootstrap admin user name"),
    Setting("admin_password", str, None, "bootstrap admin password"),
    Setting("allow_default_admin_password", bool, False, "accept the well-known bootstrap admin password 'admin' outside simulator mode"),
    Setting("session_ttl", float, 12 * 3600.0, "seconds an admin session lasts", _positive),
    # Logging.
    Setting("log_level", str, "info", "debug, info, warning or error"),
    Setting("log_bodies", bool, False, "log request and response bodies (debug only)"),
    Setting(
        "metrics_max_tool_names", int, 500,
        "distinct tool names kept as metric labels before new ones count as 'other'",
        _positive,
    ),
    Setting("web_search", bool, True, "run Anthropic's web_search server tool by interception (off: such requests get a 400)"),
    Setting("web_search_provider", str, None, "search provider: duckduckgo (the default), tavily, serper, brave, searxng or custom; in simulator mode the simulator's made-up results unless one is named"),
    Setting("web_search_url", str, None, "the provider's endpoint (default: its public one; required for searxng and custom)"),
    Setting("web_search_api_key", str, None, "API key of web_search_provider (tavily, serper, brave; optional for searxng and custom)"),
    Setting("web_search_api_keys", str, None, "keys of other providers named in web_search_by_owner: tavily=KEY,brave=KEY"),
    Setting("web_search_by_owner", str, None, "per user or team provider: user:NAME=off,team:NAME=tavily,team:NAME=searxng@URL"),
    Setting("web_search_timeout", float, 10.0, "seconds one web search may take", _positive),
    Setting("web_search_max_results", int, 8, "results per web search at most", _positive),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@attrs.frozen
class Config:
    """The validated settings, by name: ``config.port``, ``config.region``..."""

    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> Config:
        merged = dict(self.values)
        for name, value in changes.items():
            if name not in SETTINGS_BY_NAME:
                raise ConfigError(f"unknown setting {name!r}")
            merged[name] = value
        return Config(merged)

    @property
    def resolved_region(self) -> str:
        return (
            self.values.get("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )

    @property
    def resolved_store(self) -> str:
        return self.values.get("store") or _default_store()


_KIND_WORDS = {int: "a whole number", float: "a number", str: "text"}


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    try:
        if raw is None:
            return None
        if setting.kind is bool:
            value: Any = _boolean(raw)
        elif isinstance(raw, setting.kind):
            value = raw
        else:
            try:
                value = setting.kind(raw)
            except (TypeError, ValueError):
                # Python's own words ("invalid literal for int() with base
                # 10") tell an operator nothing; say what is expected.
                raise ValueError(f"must be {_KIND_WORDS.get(setting.kind, 'a value')}") from None
        if setting.kind is float and not math.isfinite(value):
            # float() reads "nan" and "inf"; no timeout or interval means
            # either, and NaN passes every comparison a check makes.
            raise ValueError("must be a finite number")
        if setting.check is not None:
            value = setting.check(value)
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {raw!r} is not valid for {setting.name}: {exc}") from None


def load_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    file: str | Path | None = None,
) -> Config:
    """Build the configuration from flags, environment and an optional file.

    Args:
        flags: values given on the command line; ``None`` means not given.
        environ: the environment (default: ``os.environ``).
        file: a TOML file of ``name = value`` pairs (also ``CCAG_CONFIG``).

    Raises:
        ConfigError: a value is invalid or the file has an unknown key.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    file = file or environ.get("CCAG_CONFIG")

    from_file: dict[str, Any] = {}
    if file:
        try:
            from_file = tomllib.loads(Path(file).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
        unknown = sorted(set(from_file) - set(SETTINGS_BY_NAME))
        if unknown:
            raise ConfigError(f"config file {file}: unknown setting(s) {', '.join(unknown)}")

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if flags.get(setting.name) is not None:
            values[setting.name] = _convert(setting, flags[setting.name], setting.flag)
        elif setting.env_var in environ:
            values[setting.name] = _convert(setting, environ[setting.env_var], setting.env_var)
        elif setting.name in from_file:
            values[setting.name] = _convert(setting, from_file[setting.name], str(file))
        else:
            values[setting.name] = setting.default

    _check_combinations(values)
    return Config(values)


def _check_combinations(values: dict[str, Any]) -> None:
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("tls_cert and tls_key must be given together")
    if values["simulator"] not in ("auto", "on", "off"):
        raise ConfigError("simulator must be auto, on or off")
    if values["log_level"] not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    prefix = values["geo_prefix"]
    if prefix is not None and prefix not in ("us", "eu", "apac", "au", "jp", "us-gov", "global", "ca"):
        raise ConfigError("geo_prefix must be one of us, eu, apac, au, jp, us-gov, ca, global")
