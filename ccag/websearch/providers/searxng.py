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
    is_web_url,
    parse_json_object,
    site_operators,
    text_field,
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
    hits: list[SearchHit] = []
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict):
            continue
        url = text_field(item, "url")
        if url is None or not is_web_url(url):
            continue
        hits.append(
            SearchHit(
                url=url,
                title=text_field(item, "title") or url,
                snippet=text_field(item, "content") or "",
                page_age=text_field(item, "publishedDate"),
            )
        )
    return hits
