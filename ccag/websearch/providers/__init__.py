"""Search providers, by the name used in the ``web_search_provider`` setting.

Each module has ``NAME``, ``DEFAULT_URL`` (None when the operator must give
one), ``NEEDS_KEY``, ``build_request(query, base_url, api_key)`` and
``parse_response(status, body)``; see :mod:`.base`.
"""

from __future__ import annotations

from types import ModuleType

from ccag.websearch.providers import brave, custom, duckduckgo, searxng, serper, tavily

PROVIDERS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (duckduckgo, tavily, serper, brave, searxng, custom)
}
