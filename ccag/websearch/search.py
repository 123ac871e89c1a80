"""Run one search: the provider's request, the HTTP call, the result blocks.

The provider's answer is filtered here as well: domain lists are applied to
every result whatever the provider did with them (most providers only take
them as ``site:`` operators, which engines treat as hints), duplicates are
dropped and the count is capped.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

from ccag.websearch.http import fetch
from ccag.websearch.providers import PROVIDERS
from ccag.websearch.providers.base import SearchFailed, SearchHit, SearchQuery
from ccag.websearch.settings import ProviderChoice
from ccag.websearch.tool import encode_snippet

logger = logging.getLogger(__name__)


async def run_search(
    choice: ProviderChoice,
    query: SearchQuery,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> list[SearchHit]:
    """The hits for ``query`` from the chosen provider, filtered.

    Raises:
        SearchFailed: the provider could not be reached or refused.
    """
    provider = PROVIDERS[choice.name]
    request = provider.build_request(query, choice.url, choice.api_key)
    response = await fetch(request, timeout=timeout, ssl_context=ssl_context)
    hits: list[SearchHit] = provider.parse_response(response.status, response.body)
    return filter_hits(hits, query)


def filter_hits(hits: list[SearchHit], query: SearchQuery) -> list[SearchHit]:
    """Hits allowed by the domain lists, without duplicates, at most ``max_results``."""
    kept: list[SearchHit] = []
    seen: set[str] = set()
    for hit in hits:
        if hit.url in seen:
            continue
        if query.allowed_domains and not any(
            in_domain(hit.url, d) for d in query.allowed_domains
        ):
            continue
        if any(in_domain(hit.url, d) for d in query.blocked_domains):
            continue
        seen.add(hit.url)
        kept.append(hit)
        if len(kept) >= query.max_results:
            break
    return kept


def in_domain(url: str, domain: str) -> bool:
    """Whether ``url`` is on ``domain`` (or a subdomain), under its path if it has one."""
    host_part, _, path_part = domain.partition("/")
    host_part = host_part.lower().removeprefix("www.")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().removeprefix("www.")
    if host != host_part and not host.endswith("." + host_part):
        return False
    return not path_part or parts.path.lstrip("/").startswith(path_part.rstrip("/"))


def result_blocks(hits: list[SearchHit]) -> list[dict[str, Any]]:
    """The ``web_search_result`` objects of a ``web_search_tool_result``."""
    return [
        {
            "type": "web_search_result",
            "url": hit.url,
            "title": hit.title,
            "encrypted_content": encode_snippet(hit.snippet),
            "page_age": hit.page_age,
        }
        for hit in hits
    ]


def error_block(error_code: str) -> dict[str, str]:
    """A ``web_search_tool_result_error`` object."""
    return {"type": "web_search_tool_result_error", "error_code": error_code}


__all__ = [
    "SearchFailed",
    "error_block",
    "filter_hits",
    "in_domain",
    "result_blocks",
    "run_search",
]
