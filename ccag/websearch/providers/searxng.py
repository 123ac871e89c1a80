"""A SearXNG instance's JSON API (the instance must enable the json format).

``GET {url}/search?q=...&format=json``; ``url`` is the instance's base URL
and is required (there is no public default). The answer's ``results`` is a
list of ``{url, title, content, engine, publishedDate}``.
"""

from __future__ import annotations

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

NAME = "searxng"
DEFAULT_URL = None
NEEDS_KEY = False


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    parameters = {"q": site_operators(query), "format": "json"}
    headers: tuple[tuple[str, str], ...] = (("accept", "application/json"),)
    if api_key:
        # Instances behind an authenticating proxy take a bearer token.
        headers += (("authorization", f"Bearer {api_key}"),)
    return HttpRequest(
        "GET", base_url.rstrip("/") + "/search?" + urlencode(parameters), headers
    )


def parse_response(status: int, body: bytes) -> list[SearchHit]:
    check_status(status, "SearXNG")
    results = parse_json_object(body, "SearXNG").get("results")
    return hits_from_results(
        results, snippet_field="content", page_age_fields=("publishedDate",)
    )
