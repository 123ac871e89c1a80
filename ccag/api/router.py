"""Dispatch by method and path alone.

Claude Code adds ``?beta=true`` to every call and some clients add a trailing
slash, so the query is ignored and one trailing slash tolerated. Anything
without a route gets Anthropic's JSON error envelope, never HTML.
"""

from __future__ import annotations

from ccag.api.responses import send_error
from ccag.errors import ApiError
from ccag.server.types import Handler, Request, Responder


class Router:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler
        if method == "GET":
            # HEAD is GET without a body; the shell drops the body itself.
            self._routes.setdefault(("HEAD", path), handler)

    async def __call__(self, request: Request, responder: Responder) -> None:
        path = request.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        handler = self._routes.get((request.method, path))
        if handler is None:
            error = ApiError(
                404,
                f"{request.method} {path[:200]} is not a route of this gateway",
                "not_found_error",
            )
            await send_error(request, responder, error)
            return
        await handler(request, responder)
