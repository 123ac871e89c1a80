"""Request and response bodies in the debug log, when the operator asks.

Bodies hold prompts and answers, so they are logged only with ``log_bodies``
set and the ``ccag.bodies`` logger at DEBUG, and each is cut at a bounded size.
"""

from __future__ import annotations

import logging

from ccag.server.types import Request, Responder

body_log = logging.getLogger("ccag.bodies")

# Enough to see what a request was about without flooding the log with a
# 76 KB Claude Code prompt on every call.
MAX_LOGGED_BYTES = 16 * 1024


def _shown(data: bytes) -> str:
    text = data[:MAX_LOGGED_BYTES].decode("utf-8", "replace")
    if len(data) > MAX_LOGGED_BYTES:
        text += f"... ({len(data)} bytes)"
    return text


def log_request_body(request: Request) -> None:
    body_log.debug("%s request body: %s", request.request_id, _shown(request.body))


class LoggingResponder:
    """A responder that logs every body part it sends."""

    def __init__(self, responder: Responder, request_id: str) -> None:
        self._responder = responder
        self._request_id = request_id

    @property
    def is_started(self) -> bool:
        return self._responder.is_started

    @property
    def body_flushed(self) -> bool:
        return self._responder.body_flushed

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        body_log.debug("%s response status %d", self._request_id, status)
        await self._responder.start_response(status, headers)

    async def send_data(self, data: bytes) -> None:
        body_log.debug("%s response body: %s", self._request_id, _shown(data))
        await self._responder.send_data(data)

    async def end_response(self) -> None:
        await self._responder.end_response()


def bodies_wanted(enabled: bool) -> bool:
    return enabled and body_log.isEnabledFor(logging.DEBUG)
