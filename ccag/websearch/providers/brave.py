"""Brave Search API, web results.

``GET https://api.search.brave.com/res/v1/web/search?q=...&count=N&country=CC``
with ``X-Subscription-Token: <key>`` and ``Accept: application/json``. The
answer's ``web.results`` is a list of ``{title, url, description, age,
page_age}``; ``age`` is human text ("2 days ago", "March 3, 2025"),
``page_age`` an ISO timestamp. Descriptions carry ``<strong>`` highlights.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from ccag.websearch.providers.base import (
    HttpRequest,
    SearchHit,
    SearchQuery,
    check_status,
    hits_from_results,
    parse_json_object,
    site_operators,
)

NAME = "brave"
DEFAULT_URL = "https://api.search.brave.com/res/v1/web/search"
NEEDS_KEY = True

# Brave's ceiling for count.
MAX_COUNT = 20

_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def _strip_tags(text: str) -> str:
    """Brave marks the query's words up with HTML tags; keep only the text."""
    return _TAG.sub("", text)


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    parameters = {
        "q": site_operators(query),
        "count": str(min(query.max_results, MAX_COUNT)),
    }
    location = query.user_location
    if location is not None and location.country and len(location.country) == 2:
        parameters["country"] = location.country.upper()
    separator = "&" if "?" in base_url else "?"
    return HttpRequest(
        "GET",
        base_url + separator + urlencode(parameters),
        (("accept", "application/json"), ("x-subscription-token", api_key or "")),
    )


def parse_response(status: int, body: bytes) -> list[SearchHit]:
    check_status(status, "Brave")
    web = parse_json_object(body, "Brave").get("web")
    results = web.get("results") if isinstance(web, dict) else None
    return hits_from_results(
        results,
        snippet_field="description",
        page_age_fields=("age", "page_age"),
        clean=_strip_tags,
    )
