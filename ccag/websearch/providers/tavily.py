"""Tavily's search API.

``POST https://api.tavily.com/search`` with ``Authorization: Bearer <key>``
and a JSON body: ``query``, ``max_results``, ``search_depth`` (``basic``),
``include_domains`` and ``exclude_domains``. The answer's ``results`` is a
list of ``{title, url, content, score}``, with ``published_date`` on news.
"""

from __future__ import annotations

from typing import Any

from ccag.websearch.providers.base import (
    HttpRequest,
    SearchHit,
    SearchQuery,
    check_status,
    hits_from_results,
    json_body,
    parse_json_object,
)

NAME = "tavily"
DEFAULT_URL = "https://api.tavily.com/search"
NEEDS_KEY = True

# Tavily's own ceiling for max_results.
MAX_RESULTS = 20


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    document: dict[str, Any] = {
        "query": query.text,
        "max_results": min(query.max_results, MAX_RESULTS),
        "search_depth": "basic",
    }
    if query.allowed_domains:
        document["include_domains"] = list(query.allowed_domains)
    if query.blocked_domains:
        document["exclude_domains"] = list(query.blocked_domains)
    return HttpRequest(
        "POST",
        base_url,
        (
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("authorization", f"Bearer {api_key or ''}"),
        ),
        json_body(document),
    )


def parse_response(status: int, body: bytes) -> list[SearchHit]:
    check_status(status, "Tavily")
    results = parse_json_object(body, "Tavily").get("results")
    return hits_from_results(
        results, snippet_field="content", page_age_fields=("published_date",)
    )
