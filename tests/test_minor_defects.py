"""Regression tests for small defects a tester reported, each through a real gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from tests.gateway_fixture import open_gateway


async def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return received
            received += chunk


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ccag.access"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"GARBAGE\r\n\r\n", " - - 400 "),
        (
            b"POST /v1/whatever HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
            " - - 400 ",
        ),
    ],
)
async def test_malformed_request_leaves_an_access_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, raw: bytes, expected: str
) -> None:
    caplog.set_level(logging.INFO, logger="ccag.access")
    with trio.fail_after(10):
        async with open_gateway(tmp_path) as running:
            reply = await _raw_exchange(running.port, raw)
    assert reply.startswith(b"HTTP/1.1 400 ")
    lines = _access_lines(caplog)
    assert len(lines) == 1, lines
    request_id = reply.split(b"request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert lines[0].startswith(request_id + expected)
    assert lines[0].endswith("ms")


async def test_oversized_body_on_a_plain_route_leaves_an_access_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ccag.access")
    raw = b"POST /admin/keys HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\n\r\n"
    with trio.fail_after(10):
        async with open_gateway(tmp_path) as running:
            reply = await _raw_exchange(running.port, raw)
    assert reply.startswith(b"HTTP/1.1 413 ")
    lines = _access_lines(caplog)
    assert len(lines) == 1, lines
    assert " POST /admin/keys 413 " in lines[0]


async def test_oversized_body_on_messages_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ccag.access")
    raw = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\n\r\n"
    with trio.fail_after(10):
        async with open_gateway(tmp_path) as running:
            reply = await _raw_exchange(running.port, raw)
    assert reply.startswith(b"HTTP/1.1 413 ")
    lines = _access_lines(caplog)
    assert len(lines) == 1, lines
    assert " POST /v1/messages 413 " in lines[0]


async def test_refused_live_view_logs_the_1008_close_and_a_member_wording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import trio_websocket

    from tests.test_liveview_socket import open_viewer

    caplog.set_level(logging.INFO, logger="ccag.access")
    with trio.fail_after(15):
        async with open_gateway(tmp_path) as running:
            async with open_viewer(running) as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": "bogus"}))
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
            with trio.fail_after(5):
                while not any("/ui/ws" in line for line in _access_lines(caplog)):
                    await trio.sleep(0.01)
    reason = closed.value.reason.reason or ""
    assert closed.value.reason.code == 1008
    assert "admin" not in reason and "API key" in reason
    lines = [line for line in _access_lines(caplog) if "/ui/ws" in line]
    assert len(lines) == 1, lines
    assert " GET /ui/ws 101 closed 1008 websocket " in lines[0]


@pytest.mark.parametrize("raw_limit", [b"1e400", b"-1", b'"ten"'])
async def test_infinite_budget_limit_is_refused_in_dollars(tmp_path: Path, raw_limit: bytes) -> None:
    from tests.admin_fixture import as_admin

    body = (
        b'{"scope": "team", "name": "eng", "period": "daily", "policy": "block", "limit_usd": '
        + raw_limit
        + b"}"
    )
    with trio.fail_after(10):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/teams", {"name": "eng"}, 201)
            reply = await admin.call("POST", "/admin/budgets", raw=body)
    assert reply.status == 400
    message = reply.json()["error"]["message"]
    assert message.startswith(
        "limit_usd: must be a finite number of dollars from 0 to 1,000,000,000"
    ), message
