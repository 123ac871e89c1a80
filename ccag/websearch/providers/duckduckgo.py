"""DuckDuckGo's HTML endpoint: no key, results scraped from the page.

``POST https://html.duckduckgo.com/html/`` with the form fields ``q`` (the
query) and ``kl`` (a region such as ``us-en``; ``wt-wt`` is none). Each
organic result is an element of class ``result`` holding an ``a.result__a``
(title; its ``href`` is a ``//duckduckgo.com/l/?uddg=<target>`` redirect) and
an ``a.result__snippet``; ads carry ``result--ad`` and are skipped. An answer
of 202 is DuckDuckGo's "too many requests from you" page.
"""

from __future__ import annotations

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

NAME = "duckduckgo"
DEFAULT_URL = "https://html.duckduckgo.com/html/"
NEEDS_KEY = False

# DuckDuckGo answers clients without a browser-like agent with an error page.
USER_AGENT = "Mozilla/5.0 (compatible; ccag web search)"


def build_request(
    query: SearchQuery, base_url: str, api_key: str | None
) -> HttpRequest:
    form = {"q": site_operators(query), "kl": _region(query)}
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


def _region(query: SearchQuery) -> str:
    # TODO: only the country is used, with English as the language; a
    # country whose DuckDuckGo region uses another language code (de-de)
    # gets no regional ranking.
    location = query.user_location
    if location is None or not location.country or len(location.country) != 2:
        return "wt-wt"
    return f"{location.country.lower()}-en"


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
