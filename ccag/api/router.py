"""Dispatch by method and path alone.

Claude Code adds ``?beta=true`` to every call and some clients add a trailing
slash, so the query is ignored and one trailing slash tolerated. Anything
without a route gets Anthropic's JSON error envelope, never HTML.

Paths that carry an id (``/admin/keys/{id}``) are prefix routes: consulted
only when no exact route matches, longest prefix first, so the hot path
(``POST /v1/messages``) stays one dict lookup.
"""

from __future__ import annotations

from ccag.api.responses import send_error
from ccag.errors import ApiError
from ccag.server.common import log_access
from ccag.server.types import Handler, Request, Responder


class _StatusRecorder:
    """A responder that remembers the status it sent, for the access log."""

    def __init__(self, responder: Responder) -> None:
        self._responder = responder
        self.status = 0

    @property
    def is_started(self) -> bool:
        return self._responder.is_started

    @property
    def body_flushed(self) -> bool:
        return self._responder.body_flushed

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        await self._responder.start_response(status, headers)

    async def send_data(self, data: bytes) -> None:
        await self._responder.send_data(data)

    async def end_response(self) -> None:
        await self._responder.end_response()


class Router:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self._prefixes: list[tuple[str, str, Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler
        if method == "GET":
            # HEAD is GET without a body; the shell drops the body itself.
            self._routes.setdefault(("HEAD", path), handler)

    def add_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        """Route every path that starts with ``prefix`` (which should end in
        ``/``) and has no exact route; the handler reads the rest itself."""
        self._prefixes.append((method, prefix, handler))
        if method == "GET":
            self._prefixes.append(("HEAD", prefix, handler))
        self._prefixes.sort(key=lambda route: len(route[1]), reverse=True)

    def _match_prefix(self, method: str, path: str) -> Handler | None:
        for route_method, prefix, handler in self._prefixes:
            if route_method == method and path.startswith(prefix) and len(path) > len(prefix):
                return handler
        return None

    def _find(self, request: Request) -> tuple[str, Handler | None]:
        path = request.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        return path, self._routes.get((request.method, path))

    def refused(self, request: Request, error: ApiError) -> None:
        """The server answered ``request`` itself (413): tell its route, if
        the route counts such requests (see :func:`ccag.server.common.report_refusal`)."""
        path, handler = self._find(request)
        refused = getattr(handler, "refused", None)
        if refused is not None and getattr(handler, "logs_access", False):
            # The route writes its own, richer access line.
            refused(request, error)
            return
        if refused is not None:
            refused(request, error)
        log_access(request.request_id, request.method, path, error.status, request.started_at)

    async def __call__(self, request: Request, responder: Responder) -> None:
        path, handler = self._find(request)
        if handler is None and self._prefixes:
            handler = self._match_prefix(request.method, path)
        if getattr(handler, "logs_access", False):
            # The model route writes a richer line of its own (model, tokens).
            await handler(request, responder)  # type: ignore[misc]
            return

        recorder = _StatusRecorder(responder)
        try:
            if handler is None:
                error = ApiError(
                    404,
                    f"{request.method} {path[:200]} is not a route of this gateway",
                    "not_found_error",
                )
                await send_error(request, recorder, error)
            else:
                await handler(request, recorder)
        finally:
            log_access(
                request.request_id, request.method, path, recorder.status, request.started_at
            )
