"""A raw HTTP/1.1 client (h11 over a Trio socket) for the end-to-end tests.

The SDK hides what these tests are about (the exact status, headers and
when each byte arrived), so the e2e tests speak HTTP themselves: one
connection per exchange, the response head and body read as they land.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs
import h11
import trio

from ccag.sse import SSEDecoder, SSEEvent

READ_SIZE = 65536


@attrs.define
class Reply:
    """A whole response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[SSEEvent]:
        return SSEDecoder().feed(self.body)


class Exchange:
    """One request on its own connection, its response read piece by piece."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.peer_closed = False

    @classmethod
    async def open(
        cls,
        port: int,
        method: str,
        target: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Exchange:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        exchange = cls(stream)
        head = [("host", f"127.0.0.1:{port}"), *headers]
        if body or method in ("POST", "PUT"):
            head.append(("content-length", str(len(body))))
        data = exchange.conn.send(
            h11.Request(method=method, target=target, headers=head)
        )
        data += exchange.conn.send(h11.Data(data=body)) if body else b""
        data += exchange.conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        return exchange

    async def _event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                self.peer_closed = True
            self.conn.receive_data(data)

    async def head(self) -> tuple[int, dict[str, str]]:
        event = await self._event()
        while isinstance(event, h11.InformationalResponse):
            event = await self._event()
        assert isinstance(event, h11.Response), event
        headers = {
            name.decode().lower(): value.decode() for name, value in event.headers
        }
        return event.status_code, headers

    async def chunk(self) -> bytes | None:
        """The next body bytes as they arrived; None at the end of the body."""
        event = await self._event()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        assert isinstance(event, h11.EndOfMessage), event
        return None

    async def body(self) -> bytes:
        parts = []
        while (part := await self.chunk()) is not None:
            parts.append(part)
        return b"".join(parts)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def request(
    port: int,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Reply:
    """Send one request and read the whole response."""
    exchange = await Exchange.open(port, method, target, headers=headers, body=body)
    try:
        status, response_headers = await exchange.head()
        data = b"" if method == "HEAD" else await exchange.body()
        return Reply(status, response_headers, data)
    finally:
        await exchange.aclose()


def message_body(
    model: str = "claude-sonnet-4-5",
    *,
    stream: bool = False,
    text: str = "hello",
    **extra: Any,
) -> bytes:
    """A minimal Messages API request body."""
    document = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    if stream:
        document["stream"] = True
    return json.dumps(document).encode()


def key_headers(key: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        ("x-api-key", key),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        *extra,
    ]


async def post_messages(
    port: int,
    key: str | None,
    body: bytes,
    *extra: tuple[str, str],
    target: str = "/v1/messages",
) -> Reply:
    headers = (
        key_headers(key, *extra)
        if key is not None
        else [
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            *extra,
        ]
    )
    return await request(port, "POST", target, headers=headers, body=body)


def assert_error(reply: Reply, status: int, error_type: str) -> dict[str, Any]:
    """``reply`` is a plain JSON Anthropic error of this status and type."""
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    document = reply.json()
    assert document["type"] == "error"
    assert document["error"]["type"] == error_type, document
    assert (
        isinstance(document["error"]["message"], str) and document["error"]["message"]
    )
    return document


def event_payloads(events: list[SSEEvent]) -> list[dict[str, Any]]:
    """Each event's JSON, checked against its ``event:`` line."""
    payloads = []
    for event in events:
        payload = json.loads(event.data)
        assert payload["type"] == event.event, (event.event, payload)
        payloads.append(payload)
    return payloads


def flat_snapshot(telemetry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """``running.telemetry.snapshot()`` as ``(instrument name, labels) -> value``.

    Labels are sorted ``(name, value)`` pairs; histograms give their
    :class:`~ccag.telemetry.HistogramValue`.
    """
    flat = {}
    for instrument, series in telemetry.snapshot():
        for labels, value in series:
            flat[(instrument.name, tuple(sorted(zip(instrument.labels, labels))))] = (
                value
            )
    return flat


def series(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The key of one series in :func:`flat_snapshot`."""
    return name, tuple(sorted(labels.items()))


def in_flight(telemetry: Any) -> int:
    return int(flat_snapshot(telemetry)[series("ccag.requests.in_flight")])


async def wait_until_idle(telemetry: Any, timeout: float = 2.0) -> None:
    """Wait until no request is in flight (the last one's accounting is done)."""
    with trio.fail_after(timeout):
        while in_flight(telemetry) != 0:
            await trio.sleep(0.01)
