"""Which search provider serves a request, from the ``web_search_*`` settings.

Global: ``web_search_provider`` (``duckduckgo``, ``tavily``, ``serper``,
``brave``, ``searxng`` or ``custom``), ``web_search_url`` (its endpoint; the
provider's public one when not given, required for ``searxng`` and
``custom``) and ``web_search_api_key``.

Per user or team: ``web_search_by_owner`` is a comma-separated list of
``user:NAME=CHOICE`` and ``team:NAME=CHOICE`` entries, where CHOICE is
``off``, a provider name, or ``provider@URL``. A user entry wins over a team
entry, which wins over the global provider. Keys for providers other than the
global one come from ``web_search_api_keys`` (``tavily=KEY,brave=KEY``).
Example::

    web_search_by_owner = "team:research=tavily, user:intern=off, team:lab=searxng@http://10.0.0.5:8888"
    web_search_api_keys = "tavily=tvly-..."
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from ccag.errors import ConfigError
from ccag.websearch.providers import PROVIDERS

OFF = "off"


@attrs.frozen
class ProviderChoice:
    """A provider and how to reach it."""

    name: str
    url: str
    api_key: str | None


@attrs.frozen
class SearchSettings:
    """The parsed settings.

    Attributes:
        enabled: interception is on (``web_search``).
        default: the global provider.
        by_owner: ``("user"|"team", name)`` -> a choice, or None for off.
        timeout: seconds one search may take.
        max_results: results per search at most.
    """

    enabled: bool
    default: ProviderChoice | None
    by_owner: dict[tuple[str, str], ProviderChoice | None]
    timeout: float
    max_results: int

    def choice_for(self, user: str | None, team: str | None) -> ProviderChoice | None:
        """The provider for a request's owner; None when search is off for them."""
        if user is not None and ("user", user) in self.by_owner:
            return self.by_owner[("user", user)]
        if team is not None and ("team", team) in self.by_owner:
            return self.by_owner[("team", team)]
        return self.default


# Needs no key and no account, so web search works on the first run.
DEFAULT_PROVIDER = "duckduckgo"


def search_settings(config: Any) -> SearchSettings:
    """The web search settings of ``config``, parsed once per distinct value.

    Raises:
        ConfigError: an unknown provider, a provider without the URL or key
            it needs, or a malformed mapping.
    """
    return _parse(
        bool(config.web_search),
        str(config.web_search_provider or DEFAULT_PROVIDER),
        config.web_search_url,
        config.web_search_api_key,
        config.web_search_by_owner,
        config.web_search_api_keys,
        float(config.web_search_timeout),
        int(config.web_search_max_results),
    )


@functools.lru_cache(maxsize=8)
def _parse(
    enabled: bool,
    provider: str,
    url: str | None,
    api_key: str | None,
    by_owner: str | None,
    api_keys: str | None,
    timeout: float,
    max_results: int,
) -> SearchSettings:
    keys = _pairs(api_keys, "web_search_api_keys")
    default = _choice(
        provider, url, api_key or keys.get(provider), "web_search_provider"
    )
    owners: dict[tuple[str, str], ProviderChoice | None] = {}
    for owner, value in _pairs(by_owner, "web_search_by_owner").items():
        kind, _, name = owner.partition(":")
        if kind not in ("user", "team") or not name:
            raise ConfigError(
                f"web_search_by_owner: {owner!r} must be user:NAME or team:NAME"
            )
        if value == OFF:
            owners[(kind, name)] = None
            continue
        chosen, _, chosen_url = value.partition("@")
        key = keys.get(chosen) or (api_key if chosen == provider else None)
        owners[(kind, name)] = _choice(
            chosen, chosen_url or None, key, "web_search_by_owner"
        )
    return SearchSettings(enabled, default, owners, timeout, max_results)


def _choice(
    name: str, url: str | None, api_key: str | None, setting: str
) -> ProviderChoice:
    module = PROVIDERS.get(name)
    if module is None:
        raise ConfigError(
            f"{setting}: unknown provider {name!r}; one of {', '.join(sorted(PROVIDERS))}"
        )
    url = url or module.DEFAULT_URL
    if not url:
        raise ConfigError(
            f"{setting}: the {name} provider needs a URL (web_search_url or {name}@URL)"
        )
    if module.NEEDS_KEY and not api_key:
        raise ConfigError(
            f"{setting}: the {name} provider needs an API key (web_search_api_key or web_search_api_keys)"
        )
    return ProviderChoice(name, url, api_key)


def _pairs(text: str | None, setting: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{setting}: {item.strip()!r} must be NAME=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs
