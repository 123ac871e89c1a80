"""``/`` (Claude Code's connectivity probe), ``/health`` and ``/ready``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ccag import __version__
from ccag.api.responses import send_json
from ccag.server.types import Request, Responder

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]


async def root(request: Request, responder: Responder) -> None:
    await send_json(responder, 200, {"name": "ccag", "version": __version__})


async def health(request: Request, responder: Responder) -> None:
    await send_json(responder, 200, {"status": "ok"})


class ReadyRoute:
    """Ready when every check reports ``ok``; 503 naming the failed ones."""

    def __init__(self, check: ReadinessCheck) -> None:
        self.check = check

    async def __call__(self, request: Request, responder: Responder) -> None:
        results = await self.check()
        ready = all(value == "ok" for value in results.values())
        await send_json(
            responder, 200 if ready else 503, {"status": "ready" if ready else "not ready", **results}
        )
