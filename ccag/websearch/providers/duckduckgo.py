"""DuckDuckGo's HTML endpoint: no key, results scraped from the page.

``POST https://html.duckduckgo.com/html/`` with the form fields ``q`` (the
query) and ``kl`` (a region such as ``us-en``; ``wt-wt`` is none). Each
organic result is an element of class ``result`` holding an ``a.result__a``
(title; its ``href`` is a ``//duckduckgo.com/l/?uddg=<target>`` redirect) and
an ``a.result__snippet``; ads carry ``result--ad`` and are skipped. An answer
of 202 is DuckDuckGo's "too many requests from you" page.
"""

from __future__ import annotations

from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

from ccag.websearch.providers.base import (
    TOO_MANY_REQUESTS,
    HttpRequest,
    SearchFailed,
    SearchHit,
    SearchQuery,
    check_status,
    is_web_url,
    site_operators,
)
from ccag.websearch.tool import UserLocation

NAME = "duckduckgo"
DEFAULT_URL = "https://html.duckduckgo.com/html/"
NEEDS_KEY = False

# DuckDuckGo's own region, used when the client gives no country or one
# DuckDuckGo has no region for: results are not ranked for any place.
NO_REGION = "wt-wt"

# ISO 3166-1 alpha-2 country -> DuckDuckGo ``kl`` region. Source: the list of
# ``kl`` values on DuckDuckGo's help page "How To Use URL Parameters To Change
# Your DuckDuckGo Search Settings"
# (https://duckduckgo.com/duckduckgo-help-pages/settings/params/), read in
# copies of that page; it was not fetched from duckduckgo.com itself.
# A region is "<country>-<language>", but neither half is always ISO: the
# United Kingdom is "uk" and Slovenia "sl" (ISO SL is Sierra Leone, which has
# no region), and Japan and Korea repeat the country ("jp-jp", "kr-kr")
# instead of a language code. Where the page lists several languages for one
# country the first one listed is used (noted on the line). The page's
# regions that are no country are left out: "ct-ca" (Catalan), "xl-es"
# (Latin America), "xa-en" (Arabia in English).
REGION_BY_COUNTRY: Mapping[str, str] = {
    "AR": "ar-es",
    "AT": "at-de",
    "AU": "au-en",
    "BE": "be-fr",  # also be-nl
    "BG": "bg-bg",
    "BR": "br-pt",
    "CA": "ca-en",  # also ca-fr
    "CH": "ch-de",  # also ch-fr, ch-it
    "CL": "cl-es",
    "CN": "cn-zh",
    "CO": "co-es",
    "CZ": "cz-cs",
    "DE": "de-de",
    "DK": "dk-da",
    "EE": "ee-et",
    "ES": "es-es",
    "FI": "fi-fi",
    "FR": "fr-fr",
    "GB": "uk-en",
    "GR": "gr-el",
    "HK": "hk-tzh",
    "HR": "hr-hr",
    "HU": "hu-hu",
    "ID": "id-id",  # also id-en
    "IE": "ie-en",
    "IL": "il-he",
    "IN": "in-en",
    "IT": "it-it",
    "JP": "jp-jp",
    "KR": "kr-kr",
    "LT": "lt-lt",
    "LV": "lv-lv",
    "MX": "mx-es",
    "MY": "my-ms",  # also my-en
    "NL": "nl-nl",
    "NO": "no-no",
    "NZ": "nz-en",
    "PE": "pe-es",
    "PH": "ph-en",  # also ph-tl
    "PL": "pl-pl",
    "PT": "pt-pt",
    "RO": "ro-ro",
    "RU": "ru-ru",
    # Assumption: the page names "xa-ar" only "Arabia"; Saudi Arabia is the
    # country it most likely means (search API vendors label it so).
    "SA": "xa-ar",
    "SE": "se-sv",
    "SG": "sg-en",
    "SI": "sl-sl",
    "SK": "sk-sk",
    "TH": "th-th",
    "TR": "tr-tr",
    "TW": "tw-tzh",
    "UA": "ua-uk",
    "US": "us-en",  # also "ue-es" (Spanish)
    "VE": "ve-es",
    "VN": "vn-vi",
    "ZA": "za-en",
}

# DuckDuckGo answers clients without a browser-like agent with an error page.
USER_AGENT = "Mozilla/5.0 (compatible; ccag web search)"


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    form = {"q": site_operators(query), "kl": region_for(query.user_location)}
    return HttpRequest(
        "POST",
        base_url,
        (
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "text/html"),
            ("user-agent", USER_AGENT),
        ),
        urlencode(form).encode("ascii"),
    )


def parse_response(status: int, body: bytes) -> list[SearchHit]:
    if status == 202:
        raise SearchFailed(
            "DuckDuckGo is limiting requests from this address", TOO_MANY_REQUESTS
        )
    check_status(status, "DuckDuckGo")
    parser = _ResultParser()
    parser.feed(body.decode("utf-8", "replace"))
    parser.close()
    return parser.hits


def region_for(location: UserLocation | None) -> str:
    """DuckDuckGo's ``kl`` region for where the user is.

    Args:
        location: the client's ``user_location``; only its country (an ISO
            3166-1 alpha-2 code, any case) is used.

    Returns:
        The country's region from :data:`REGION_BY_COUNTRY`, or ``wt-wt``
        (no region) when the country is missing or DuckDuckGo has no region
        for it.
    """
    if location is None or not location.country:
        return NO_REGION
    return REGION_BY_COUNTRY.get(location.country.strip().upper(), NO_REGION)


def _target(href: str) -> str:
    """The real URL behind DuckDuckGo's redirect link."""
    if href.startswith("//"):
        href = "https:" + href
    parts = urlsplit(href)
    if parts.path == "/l/" and "duckduckgo.com" in (parts.hostname or ""):
        return parse_qs(parts.query).get("uddg", [""])[0]
    return href


class _ResultParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hits: list[SearchHit] = []
        self._in_ad = 0
        self._depth = 0
        self._capture: str | None = None
        self._text: list[str] = []
        self._url = ""
        self._title = ""

    def handle_starttag(
        self, tag: str, attributes: list[tuple[str, str | None]]
    ) -> None:
        found = dict(attributes)
        classes = (found.get("class") or "").split()
        if tag == "div":
            self._depth += 1
            if "result--ad" in classes:
                self._in_ad = self._depth
        if tag != "a" or self._in_ad:
            return
        if "result__a" in classes:
            self._finish_pending()
            self._capture, self._text = "title", []
            self._url = _target(found.get("href") or "")
        elif "result__snippet" in classes and self._url:
            self._capture, self._text = "snippet", []

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            if self._in_ad == self._depth:
                self._in_ad = 0
            self._depth -= 1
        if tag != "a" or self._capture is None:
            return
        text = " ".join("".join(self._text).split())
        if self._capture == "title":
            self._title = text
        else:
            self._add(text)
        self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._finish_pending()

    def _finish_pending(self) -> None:
        if self._url and self._title:
            self._add("")

    def _add(self, snippet: str) -> None:
        if is_web_url(self._url) and self._title:
            self.hits.append(
                SearchHit(url=self._url, title=self._title, snippet=snippet)
            )
        self._url, self._title = "", ""
