"""A fake search provider on loopback, for web search tests.

``open_fake_provider()`` serves every provider's wire format from one port:
the answer for each path is scripted (status, body, delay), and every request
is recorded so tests can check what ccag sent. By default it answers the
``custom`` provider's protocol with :data:`RESULTS`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ccag.config import load_config
from ccag.server import serve
from ccag.server.types import Request, Responder
from tests.gateway_fixture import RunningGateway, open_gateway

RESULTS = [
    {
        "url": "https://trio.readthedocs.io/en/stable/",
        "title": "Trio: a friendly Python library for async concurrency and I/O",
        "snippet": "Trio makes it easy to write correct concurrent programs.",
        "page_age": "2025-06-01",
    },
    {
        "url": "https://github.com/python-trio/trio",
        "title": "python-trio/trio on GitHub",
        "snippet": "Trio - a friendly Python library for async concurrency and I/O.",
    },
    {
        "url": "https://blocked.example/trio",
        "title": "A page on a blocked domain",
        "snippet": "Should be filtered when blocked.example is blocked.",
    },
]


@attrs.define
class Answer:
    status: int = 200
    body: bytes = attrs.field(factory=lambda: json.dumps({"results": RESULTS}).encode())
    content_type: str = "application/json"
    delay: float = 0.0


@attrs.define
class FakeProvider:
    port: int = 0
    answer: Answer = attrs.Factory(Answer)
    received: list[tuple[str, str, dict[str, str], bytes]] = attrs.Factory(list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/search"

    async def handle(self, request: Request, responder: Responder) -> None:
        headers = {name: value for name, value in request.headers.items}
        self.received.append((request.method, request.target, headers, request.body))
        answer = self.answer
        if answer.delay:
            await trio.sleep(answer.delay)
        await responder.start_response(
            answer.status,
            [
                ("content-type", answer.content_type),
                ("content-length", str(len(answer.body))),
            ],
        )
        await responder.send_data(answer.body)
        await responder.end_response()


@asynccontextmanager
async def open_fake_provider() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    config = load_config({"host": "127.0.0.1", "port": 0}, environ={})
    async with trio.open_nursery() as nursery:
        provider.port = await nursery.start(
            lambda task_status: serve(provider.handle, config, task_status=task_status)
        )
        try:
            yield provider
        finally:
            nursery.cancel_scope.cancel()


def search_settings_for(provider: FakeProvider, **extra: Any) -> dict[str, Any]:
    """Gateway settings that send searches to the fake, as the custom provider."""
    return {"web_search_provider": "custom", "web_search_url": provider.url, **extra}


@asynccontextmanager
async def open_search_gateway(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[FakeProvider, RunningGateway]]:
    """A fake provider and a gateway sending its searches there, with
    ``settings`` added to :func:`search_settings_for`'s."""
    async with (
        open_fake_provider() as provider,
        open_gateway(
            tmp_path, settings=search_settings_for(provider, **settings)
        ) as running,
    ):
        yield provider, running
