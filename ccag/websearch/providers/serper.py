"""Serper, Google results as JSON.

``POST https://google.serper.dev/search`` with ``X-API-KEY: <key>`` and a
JSON body: ``q``, ``num``, ``gl`` (a lower-case country code) and
``location`` (free text such as ``"Berlin, Germany"``). The answer's
``organic`` is a list of ``{title, link, snippet, date, position}``.
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
    site_operators,
)

NAME = "serper"
DEFAULT_URL = "https://google.serper.dev/search"
NEEDS_KEY = True


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    document: dict[str, Any] = {"q": site_operators(query), "num": query.max_results}
    location = query.user_location
    if location is not None:
        if location.country and len(location.country) == 2:
            document["gl"] = location.country.lower()
        place = ", ".join(
            part for part in (location.city, location.region, location.country) if part
        )
        if place:
            document["location"] = place
    return HttpRequest(
        "POST",
        base_url,
        (
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("x-api-key", api_key or ""),
        ),
        json_body(document),
    )


def parse_response(status: int, body: bytes) -> list[SearchHit]:
    check_status(status, "Serper")
    organic = parse_json_object(body, "Serper").get("organic")
    return hits_from_results(
        organic, url_field="link", snippet_field="snippet", page_age_fields=("date",)
    )
