"""``GET /ui`` and ``GET /ui/<asset>``: the live view's page, from the package.

The files in ``ccag/static`` are read once, at start, into memory: the set of
servable names is fixed then, so no request path can reach the file system
(no traversal, no surprise files). Each asset carries a strong ETag, so a
reload costs a 304; the page itself is revalidated every time so a new ccag
version is picked up at once.
"""

from __future__ import annotations

import hashlib
import importlib.resources

import attrs

from ccag.api.responses import send_error
from ccag.errors import ApiError
from ccag.server.types import Request, Responder

ASSET_PREFIX = "/ui/"
INDEX_NAME = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# Assets may be cached briefly and then revalidated by ETag: short enough
# that an upgrade shows within minutes even without the ETag check.
ASSET_CACHE_CONTROL = "public, max-age=300, must-revalidate"
INDEX_CACHE_CONTROL = "no-cache"

# The page loads only its own files and talks only to its own origin; the
# WebSocket is same-origin too ('self' covers ws: and wss: in CSP Level 3).
SECURITY_HEADERS = (
    (
        "content-security-policy",
        (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)


@attrs.frozen
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(package: str = "ccag.static") -> dict[str, Asset]:
    """Every servable file of ``package`` by name."""
    assets = {}
    for entry in importlib.resources.files(package).iterdir():
        name = entry.name
        suffix = name[name.rfind("."):] if "." in name else ""
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


class StaticPages:
    """The page and its assets.

    Args:
        assets: by file name (default: the package's ``ccag/static``).
    """

    def __init__(self, assets: dict[str, Asset] | None = None) -> None:
        self._assets = load_assets() if assets is None else assets

    async def index(self, request: Request, responder: Responder) -> None:
        await self._send(request, responder, INDEX_NAME, INDEX_CACHE_CONTROL)

    async def asset(self, request: Request, responder: Responder) -> None:
        name = request.path[len(ASSET_PREFIX):]
        await self._send(request, responder, name, ASSET_CACHE_CONTROL)

    async def _send(
        self, request: Request, responder: Responder, name: str, cache_control: str
    ) -> None:
        asset = self._assets.get(name)
        if asset is None:
            await send_error(
                request, responder,
                ApiError(404, f"no such file in the live view: {name[:100]!r}",
                         "not_found_error"),
            )
            return

        headers = [
            ("etag", asset.etag),
            ("cache-control", cache_control),
            *SECURITY_HEADERS,
        ]
        if asset.etag in _etags(request.headers.get("if-none-match")):
            await responder.start_response(304, headers)
            await responder.end_response()
            return
        headers += [
            ("content-type", asset.content_type),
            ("content-length", str(len(asset.body))),
        ]
        await responder.start_response(200, headers)
        await responder.send_data(asset.body)
        await responder.end_response()


def _etags(header: str | None) -> list[str]:
    if not header:
        return []
    return [tag.strip().removeprefix("W/") for tag in header.split(",")]
