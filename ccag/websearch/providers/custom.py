"""Any HTTP service that speaks ccag's own small search protocol.

Request: ``POST {url}`` with ``Content-Type: application/json`` (and
``Authorization: Bearer <key>`` when a key is configured)::

    {"query": "trio python", "max_results": 8,
     "allowed_domains": ["python.org"], "blocked_domains": [],
     "user_location": {"city": null, "region": null, "country": "US",
                       "timezone": null}}

``user_location`` is null when the client gave none.

Response: 200 with::

    {"results": [{"url": "https://...", "title": "...",
                  "snippet": "...", "page_age": "2025-01-31"}]}

``snippet`` and ``page_age`` may be left out. Any other status is a failed
search (429 is reported to the client as ``too_many_requests``).
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

NAME = "custom"
DEFAULT_URL = None
NEEDS_KEY = False


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    location = query.user_location
    document: dict[str, Any] = {
        "query": query.text,
        "max_results": query.max_results,
        "allowed_domains": list(query.allowed_domains),
        "blocked_domains": list(query.blocked_domains),
        "user_location": None
        if location is None
        else {
            "city": location.city,
            "region": location.region,
            "country": location.country,
            "timezone": location.timezone,
        },
    }
    headers: tuple[tuple[str, str], ...] = (
        ("content-type", "application/json"),
        ("accept", "application/json"),
    )
    if api_key:
        headers += (("authorization", f"Bearer {api_key}"),)
    return HttpRequest("POST", base_url, headers, json_body(document))


def parse_response(status: int, body: bytes) -> list[SearchHit]:
    check_status(status, "the search service")
    results = parse_json_object(body, "the search service").get("results")
    return hits_from_results(
        results, snippet_field="snippet", page_age_fields=("page_age",)
    )
