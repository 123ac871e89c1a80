"""Budget notices to webhooks: queued, sent in the background, retried.

The request path only puts a notice on a bounded queue (``send_nowait``); a
full queue drops the notice with an error log rather than wait, so a slow or
dead receiver never delays a request. Worker tasks POST each notice as JSON,
retrying with back-off; each attempt has a deadline.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

from ccag.store import StoreError

logger = logging.getLogger(__name__)

# Notices waiting to be sent; far more than thresholds crossed at once.
QUEUE_SIZE = 1000

# Workers: a dead receiver holds one worker through its retries, the others
# keep delivering to live ones.
WORKERS = 4

# Attempts per notice and the back-off between them (doubling).
ATTEMPTS = 5
FIRST_RETRY_SECONDS = 1.0

# One attempt, connect to last byte.
ATTEMPT_SECONDS = 10.0

# A receiver's answer is read only to its status; its body is capped.
MAX_ANSWER_BYTES = 64 * 1024

Claim = Callable[[Any], Awaitable[bool]]


class WebhookError(Exception):
    """One delivery attempt failed."""


def shown_url(url: str) -> str:
    """A webhook URL as logs may show it: scheme, host and port only.

    Webhook URLs often carry their secret in the path or query (chat
    services' incoming hooks) or in user info; none of that is logged.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/..." if host else "a URL with no host"


async def post_json(url: str, payload: dict[str, Any]) -> int:
    """POST ``payload`` to ``url`` (http or https); the response status.

    Raises:
        WebhookError: the URL is unusable or the exchange failed.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"not an http(s) URL: {shown_url(url)[:200]}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = json.dumps(payload).encode()
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
        if parts.scheme == "https":
            stream = trio.SSLStream(
                stream, ssl.create_default_context(), server_hostname=parts.hostname
            )
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            host = parts.netloc.rpartition("@")[2]
            data = connection.send(
                h11.Request(
                    method="POST",
                    target=target,
                    headers=[
                        ("host", host),
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                        ("user-agent", "ccag-webhook"),
                        ("connection", "close"),
                    ],
                )
            )
            data += connection.send(h11.Data(data=body)) + connection.send(
                h11.EndOfMessage()
            )
            await stream.send_all(data)
            read = 0
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some(16384)
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        raise WebhookError("answer too long")
                    connection.receive_data(bytes(chunk))
                    continue
                if isinstance(event, h11.Response):
                    return int(event.status_code)
                if isinstance(event, h11.ConnectionClosed):
                    raise WebhookError("closed without an answer")
    except (OSError, trio.BrokenResourceError, ssl.SSLError, h11.ProtocolError) as exc:
        raise WebhookError(str(exc) or type(exc).__name__) from None


class WebhookSender:
    """A bounded queue of (url, notice) and the workers that send it.

    Args:
        claim: awaited before a notice is sent; False means another gateway
            (or an earlier run) already sent it.
    """

    def __init__(self, claim: Claim | None = None) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[str, Any]](
            QUEUE_SIZE
        )
        self._claim = claim
        self.delivered = 0
        self.failed = 0

    def enqueue(self, url: str, notice: Any) -> None:
        """Queue a notice; drops it (logged) when the queue is full."""
        try:
            self._send.send_nowait((url, notice))
        except trio.WouldBlock:
            logger.error(
                "webhook queue full; a budget notice for %s was dropped", shown_url(url)[:200]
            )

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the workers until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        async for url, notice in self._receive:
            if self._claim is not None:
                try:
                    if not await self._claim(notice):
                        continue
                except StoreError as exc:  # the store is down: send anyway
                    logger.warning(
                        "cannot record a budget notice (%s); sending it anyway", exc
                    )
            await self._deliver(url, notice.payload())

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        delay = FIRST_RETRY_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            problem: str
            try:
                with trio.fail_after(ATTEMPT_SECONDS):
                    status = await post_json(url, payload)
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {status}"
            except (WebhookError, trio.TooSlowError) as exc:
                problem = str(exc) or "timed out"
            logger.warning(
                "webhook %s attempt %d/%d failed: %s",
                shown_url(url)[:200],
                attempt,
                ATTEMPTS,
                problem,
            )
            if attempt < ATTEMPTS:
                await trio.sleep(delay)
                delay *= 2
        self.failed += 1
        logger.error(
            "webhook %s: budget notice not delivered after %d attempts",
            shown_url(url)[:200],
            ATTEMPTS,
        )
