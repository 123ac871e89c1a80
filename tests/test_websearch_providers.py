"""Each search provider's request and its parsing of a recorded answer.

The answers in tests/data/websearch/ are written by hand after each
provider's public documentation. One test per provider also runs the whole
exchange over HTTP against the fake provider on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.websearch.providers import (
    PROVIDERS,
    brave,
    custom,
    duckduckgo,
    searxng,
    serper,
    tavily,
)
from ccag.websearch.providers.base import SearchFailed, SearchHit, SearchQuery
from ccag.websearch.search import filter_hits, in_domain, run_search
from ccag.websearch.settings import ProviderChoice
from ccag.websearch.tool import UserLocation
from tests.websearch_fakes import Answer, open_fake_provider

DATA = Path(__file__).parent / "data" / "websearch"
TEST_TIMEOUT_SECONDS = 10

QUERY = SearchQuery(
    text="trio python",
    max_results=5,
    allowed_domains=("readthedocs.io",),
    user_location=UserLocation(
        city="Berlin", region="Berlin", country="DE", timezone="Europe/Berlin"
    ),
)
TRIO_DOCS = "https://trio.readthedocs.io/en/stable/"
TRIO_GITHUB = "https://github.com/python-trio/trio"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


# -- requests -------------------------------------------------------------------


def test_duckduckgo_request_is_a_form_post_with_site_operators() -> None:
    request = duckduckgo.build_request(QUERY, duckduckgo.DEFAULT_URL, None)
    assert (request.method, request.url) == (
        "POST",
        "https://html.duckduckgo.com/html/",
    )
    form = parse_qs(request.body.decode())
    assert form["q"] == ["trio python (site:readthedocs.io)"]
    assert form["kl"] == ["de-de"]
    assert dict(request.headers)["content-type"] == "application/x-www-form-urlencoded"


def test_tavily_request_has_bearer_key_and_domain_lists() -> None:
    request = tavily.build_request(QUERY, tavily.DEFAULT_URL, "tvly-test")
    assert (request.method, request.url) == ("POST", "https://api.tavily.com/search")
    assert dict(request.headers)["authorization"] == "Bearer tvly-test"
    assert json.loads(request.body) == {
        "query": "trio python",
        "max_results": 5,
        "search_depth": "basic",
        "include_domains": ["readthedocs.io"],
    }


def test_serper_request_has_key_header_country_and_location() -> None:
    request = serper.build_request(QUERY, serper.DEFAULT_URL, "serper-key")
    assert (request.method, request.url) == ("POST", "https://google.serper.dev/search")
    assert dict(request.headers)["x-api-key"] == "serper-key"
    assert json.loads(request.body) == {
        "q": "trio python (site:readthedocs.io)",
        "num": 5,
        "gl": "de",
        "location": "Berlin, Berlin, DE",
    }


def test_brave_request_is_a_get_with_token_header() -> None:
    request = brave.build_request(QUERY, brave.DEFAULT_URL, "brave-key")
    parts = urlsplit(request.url)
    assert request.method == "GET" and parts.path == "/res/v1/web/search"
    assert parse_qs(parts.query) == {
        "q": ["trio python (site:readthedocs.io)"],
        "count": ["5"],
        "country": ["DE"],
    }
    assert dict(request.headers)["x-subscription-token"] == "brave-key"


def test_searxng_request_asks_for_json() -> None:
    request = searxng.build_request(QUERY, "http://searx.local:8888/", None)
    parts = urlsplit(request.url)
    assert request.method == "GET" and parts.path == "/search"
    assert parse_qs(parts.query)["format"] == ["json"]
    assert "authorization" not in dict(request.headers)


def test_custom_request_carries_everything() -> None:
    request = custom.build_request(QUERY, "http://search.local/api", "secret")
    assert dict(request.headers)["authorization"] == "Bearer secret"
    assert json.loads(request.body) == {
        "query": "trio python",
        "max_results": 5,
        "allowed_domains": ["readthedocs.io"],
        "blocked_domains": [],
        "user_location": {
            "city": "Berlin",
            "region": "Berlin",
            "country": "DE",
            "timezone": "Europe/Berlin",
        },
    }


# -- responses ------------------------------------------------------------------


def test_duckduckgo_page_parses_organic_results_only() -> None:
    hits = duckduckgo.parse_response(200, fixture("duckduckgo.html"))
    assert [hit.url for hit in hits] == [
        TRIO_DOCS,
        TRIO_GITHUB,
        "https://pypi.org/project/trio/",
    ]
    assert (
        hits[0].title == "Trio: a friendly Python library for async concurrency and I/O"
    )
    assert hits[0].snippet.startswith("The Trio project aims to produce")
    assert (
        hits[1].title
        == "GitHub - python-trio/trio: Trio \u2013 a friendly Python library"
    )
    assert hits[2].snippet == ""


def test_duckduckgo_202_is_too_many_requests() -> None:
    with pytest.raises(SearchFailed) as caught:
        duckduckgo.parse_response(202, b"<html>anomaly</html>")
    assert caught.value.error_code == "too_many_requests"


def test_tavily_answer_parses() -> None:
    hits = tavily.parse_response(200, fixture("tavily.json"))
    assert [hit.url for hit in hits] == [
        TRIO_DOCS,
        "https://discuss.python.org/t/trio-0-30/1234",
    ]
    assert hits[1].page_age == "Tue, 03 Jun 2025 10:00:00 GMT"
    assert hits[0].snippet.startswith("The Trio project")


def test_serper_answer_parses_organic() -> None:
    hits = serper.parse_response(200, fixture("serper.json"))
    assert hits == [
        SearchHit(
            TRIO_DOCS,
            "Trio: a friendly Python library for async concurrency and I/O",
            "The Trio project aims to produce a production-quality async I/O library for Python.",
        ),
        SearchHit(
            TRIO_GITHUB,
            "python-trio/trio - GitHub",
            "Trio - a friendly Python library for async concurrency and I/O.",
            "May 28, 2025",
        ),
    ]


def test_brave_answer_parses_without_highlight_tags() -> None:
    hits = brave.parse_response(200, fixture("brave.json"))
    assert [hit.url for hit in hits] == [TRIO_DOCS, TRIO_GITHUB]
    assert (
        hits[0].title == "Trio: a friendly Python library for async concurrency and I/O"
    )
    assert "<strong>" not in hits[0].snippet
    assert hits[0].page_age == "June 1, 2025" and hits[1].page_age is None


def test_searxng_answer_keeps_web_urls() -> None:
    hits = searxng.parse_response(200, fixture("searxng.json"))
    assert [hit.url for hit in hits] == [TRIO_DOCS, TRIO_GITHUB]
    assert hits[1].page_age == "2025-05-28T00:00:00"


def test_custom_answer_parses() -> None:
    hits = custom.parse_response(200, fixture("custom.json"))
    assert hits == [
        SearchHit(
            TRIO_DOCS,
            "Trio: a friendly Python library for async concurrency and I/O",
            "The Trio project aims to produce a production-quality async I/O library for Python.",
            "2025-06-01",
        ),
        SearchHit(TRIO_GITHUB, "python-trio/trio"),
    ]


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@pytest.mark.parametrize(
    ("status", "code"), [(429, "too_many_requests"), (503, "unavailable")]
)
def test_error_statuses_map_to_error_codes(name: str, status: int, code: str) -> None:
    with pytest.raises(SearchFailed) as caught:
        PROVIDERS[name].parse_response(status, b"{}")
    assert caught.value.error_code == code


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(PROVIDERS)), body=st.binary(max_size=2000))
def test_any_bytes_parse_or_raise_search_failed(name: str, body: bytes) -> None:
    try:
        hits = PROVIDERS[name].parse_response(200, body)
    except SearchFailed:
        return
    assert all(
        isinstance(hit, SearchHit) and hit.url.startswith("http") for hit in hits
    )


# -- filtering --------------------------------------------------------------------


def test_in_domain_matches_subdomains_and_paths() -> None:
    assert in_domain("https://trio.readthedocs.io/x", "readthedocs.io")
    assert in_domain("https://www.example.com/a", "example.com")
    assert not in_domain("https://notexample.com/", "example.com")
    assert in_domain("https://example.com/blog/post", "example.com/blog")
    assert not in_domain("https://example.com/shop", "example.com/blog")


def test_filter_hits_applies_lists_dedupes_and_caps() -> None:
    hits = [
        SearchHit(f"https://site{n % 3}.example/{n // 3}", f"t{n}") for n in range(9)
    ]
    hits.append(hits[0])
    query = SearchQuery("q", max_results=2, blocked_domains=("site1.example",))
    assert [hit.url for hit in filter_hits(hits, query)] == [
        "https://site0.example/0",
        "https://site2.example/0",
    ]


# -- over HTTP on loopback ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("duckduckgo", "duckduckgo.html", "text/html"),
        ("tavily", "tavily.json", "application/json"),
        ("serper", "serper.json", "application/json"),
        ("brave", "brave.json", "application/json"),
        ("searxng", "searxng.json", "application/json"),
        ("custom", "custom.json", "application/json"),
    ],
)
async def test_provider_round_trip_over_loopback(
    name: str, data: str, content_type: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_fake_provider() as provider:
            provider.answer = Answer(body=fixture(data), content_type=content_type)
            choice = ProviderChoice(name, provider.url, "test-key")
            hits = await run_search(
                choice, SearchQuery("trio python", max_results=1), timeout=5
            )

    assert [hit.url for hit in hits] == [TRIO_DOCS]
    method, target, headers, _ = provider.received[0]
    assert (
        method
        == PROVIDERS[name].build_request(SearchQuery("x", 1), provider.url, None).method
    )
    assert target.startswith("/search")
    assert headers["host"] == f"127.0.0.1:{provider.port}"


async def test_unreachable_provider_is_unavailable() -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_fake_provider() as provider:
            url = provider.url
        with pytest.raises(SearchFailed) as caught:
            await run_search(
                ProviderChoice("custom", url, None), SearchQuery("q", 3), timeout=2
            )
    assert caught.value.error_code == "unavailable"
