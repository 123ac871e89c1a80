"""The DuckDuckGo provider ranks results for the client's country.

The client's ``user_location.country`` (ISO 3166-1 alpha-2) becomes
DuckDuckGo's ``kl`` region, spelled DuckDuckGo's way; a country DuckDuckGo
has no region for, or none at all, asks for no region (``wt-wt``).
"""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
import trio

from ccag.websearch.providers import duckduckgo
from ccag.websearch.providers.base import SearchQuery
from ccag.websearch.search import run_search
from ccag.websearch.settings import ProviderChoice
from ccag.websearch.tool import UserLocation
from tests.websearch_fakes import Answer, open_fake_provider

TEST_TIMEOUT_SECONDS = 10

# A results page with no results: these tests look only at what ccag sent.
EMPTY_PAGE = b"<html><body><div class='results'></div></body></html>"


def at(country: str | None) -> UserLocation:
    return UserLocation(city="Somewhere", country=country, timezone="UTC")


@pytest.mark.parametrize(
    ("country", "region"),
    [
        ("US", "us-en"),
        ("GB", "uk-en"),
        ("DE", "de-de"),
        ("JP", "jp-jp"),
        ("BR", "br-pt"),
        ("CH", "ch-de"),
        ("CA", "ca-en"),
        ("SI", "sl-sl"),
        ("KR", "kr-kr"),
        ("gb", "uk-en"),
        ("de", "de-de"),
        (" jp ", "jp-jp"),
    ],
)
def test_country_maps_to_duckduckgo_region(country: str, region: str) -> None:
    assert duckduckgo.region_for(at(country)) == region


@pytest.mark.parametrize(
    "country",
    [
        "ZZ",  # no such country
        "SL",  # Sierra Leone: DuckDuckGo has no region; "sl" is Slovenia there
        "UK",  # not an ISO code, though DuckDuckGo spells Britain so
        "USA",
        "",
        None,
    ],
)
def test_country_without_region_asks_for_none(country: str | None) -> None:
    assert duckduckgo.region_for(at(country)) == "wt-wt"


def test_missing_location_asks_for_no_region() -> None:
    assert duckduckgo.region_for(None) == "wt-wt"


def test_every_region_is_a_country_then_a_language() -> None:
    for country, region in duckduckgo.REGION_BY_COUNTRY.items():
        assert len(country) == 2 and country.isupper(), country
        place, _, language = region.partition("-")
        assert len(place) == 2 and place.islower(), region
        assert 2 <= len(language) <= 3 and language.islower(), region
    assert len(set(duckduckgo.REGION_BY_COUNTRY.values())) == len(
        duckduckgo.REGION_BY_COUNTRY
    )


@pytest.mark.parametrize(
    ("location", "region"),
    [
        (at("GB"), "uk-en"),
        (at("de"), "de-de"),
        (at("XX"), "wt-wt"),
        (None, "wt-wt"),
    ],
)
async def test_request_to_duckduckgo_carries_the_region(
    location: UserLocation | None, region: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_fake_provider() as provider:
            provider.answer = Answer(body=EMPTY_PAGE, content_type="text/html")
            choice = ProviderChoice("duckduckgo", provider.url, None)
            query = SearchQuery("trio python", max_results=3, user_location=location)
            hits = await run_search(choice, query, timeout=5)

    assert hits == []
    method, _, headers, body = provider.received[0]
    assert method == "POST"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(body.decode("ascii"))["kl"] == [region]
