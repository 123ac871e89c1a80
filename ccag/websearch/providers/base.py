"""What every search provider module shares: the query, the hit, the failure.

A provider is a pure module: ``build_request(query, base_url, api_key)``
gives the HTTP request to send, ``parse_response(status, body)`` turns the
answer into hits or raises :class:`SearchFailed`. The shell
(:mod:`ccag.websearch.search`) does the I/O in between.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs

from ccag.anthropic.wirejson import dump_json
from ccag.errors import CcagError
from ccag.websearch.tool import UserLocation

# Anthropic's web_search_tool_result_error codes used here.
UNAVAILABLE = "unavailable"
TOO_MANY_REQUESTS = "too_many_requests"


@attrs.frozen
class SearchQuery:
    """One search, with the limits the client's tool set.

    Attributes:
        text: the query the model wrote.
        max_results: results wanted at most.
        allowed_domains: only results from these domains.
        blocked_domains: never results from these domains.
        user_location: where results should be local to.
    """

    text: str
    max_results: int
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    user_location: UserLocation | None = None


@attrs.frozen
class SearchHit:
    """One result: where, what it is called, how old, and a text snippet."""

    url: str
    title: str
    snippet: str = ""
    page_age: str | None = None


@attrs.frozen
class HttpRequest:
    """An HTTP request a provider wants sent."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class SearchFailed(CcagError):
    """The search could not be run; ``error_code`` is what the client sees."""

    def __init__(self, message: str, error_code: str = UNAVAILABLE) -> None:
        super().__init__(message)
        self.error_code = error_code


def check_status(status: int, provider: str) -> None:
    """Raise the failure a non-2xx answer means.

    Raises:
        SearchFailed: ``too_many_requests`` for 429, else ``unavailable``.
    """
    if status == 429:
        raise SearchFailed(
            f"{provider} refused the search: rate limited", TOO_MANY_REQUESTS
        )
    if not 200 <= status < 300:
        raise SearchFailed(f"{provider} answered HTTP {status}")


def parse_json_object(body: bytes, provider: str) -> dict[str, Any]:
    """The body as a JSON object.

    Raises:
        SearchFailed: it is not one.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise SearchFailed(
            f"{provider} answered with something that is not JSON"
        ) from None
    if not isinstance(document, dict):
        raise SearchFailed(f"{provider} answered with JSON that is not an object")
    return document


def json_body(document: dict[str, Any]) -> bytes:
    return dump_json(document)


def text_field(item: dict[str, Any], *names: str) -> str | None:
    """The first of ``names`` that holds a non-empty string."""
    for name in names:
        value = item.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _unchanged(text: str) -> str:
    return text


def hits_from_results(
    results: object,
    *,
    url_field: str = "url",
    snippet_field: str,
    page_age_fields: tuple[str, ...],
    clean: Callable[[str], str] = _unchanged,
) -> list[SearchHit]:
    """The hits in a provider's result list.

    Items that are not JSON objects or have no http(s) URL are skipped; a
    missing title shows the URL. ``results`` that is not a list gives none.

    Args:
        results: the list from the provider's answer, as parsed.
        url_field: the field holding the result's URL.
        snippet_field: the field holding its text snippet.
        page_age_fields: the fields holding its age or date, first found wins.
        clean: applied to title and snippet (Brave marks matches up in HTML).
    """
    hits: list[SearchHit] = []
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict):
            continue
        url = text_field(item, url_field)
        if url is None or not is_web_url(url):
            continue
        hits.append(
            SearchHit(
                url=url,
                title=clean(text_field(item, "title") or url),
                snippet=clean(text_field(item, snippet_field) or ""),
                page_age=text_field(item, *page_age_fields),
            )
        )
    return hits


def site_operators(query: SearchQuery) -> str:
    """The query with ``site:`` operators for the domain lists (search engine syntax)."""
    text = query.text
    if query.allowed_domains:
        text += (
            " ("
            + " OR ".join(f"site:{domain}" for domain in query.allowed_domains)
            + ")"
        )
    for domain in query.blocked_domains:
        text += f" -site:{domain}"
    return text
