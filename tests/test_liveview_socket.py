"""The live view's WebSocket against a real gateway and simulator."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket

from ccag.liveview.hub import LiveHub, ViewerMode
from tests.e2e_client import message_body, post_messages, request
from tests.gateway_fixture import RunningGateway, open_gateway

ADMIN_PASSWORD = "test-admin-password"


def hub_of(running: RunningGateway) -> LiveHub:
    for sink in running.gateway.services.sinks:
        owner = getattr(sink, "__self__", None)
        if isinstance(owner, LiveHub):
            return owner
    raise AssertionError("no live view hub among the sinks")


async def admin_token(running: RunningGateway) -> str:
    reply = await request(
        running.port, "POST", "/auth/login",
        headers=[("content-type", "application/json")],
        body=json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode(),
    )
    assert reply.status == 200, reply.body
    token: str = reply.json()["token"]
    return token


@asynccontextmanager
async def open_viewer(
    running: RunningGateway, *, receive_buffer: int | None = None, **options: Any
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket client on its own socket, closed whatever happens.

    trio-websocket's own ``open_websocket_url`` leaves its socket open when
    the server closes first (the client waits for the TCP close, then never
    closes its end), which the warnings-as-errors suite reports; owning the
    stream here closes it.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", running.port))
    stream = trio.SocketStream(sock)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", "/ui/ws", **options
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await ws.get_message())
    return document


async def next_of(ws: trio_websocket.WebSocketConnection, kind: str) -> dict[str, Any]:
    while True:
        document = await receive(ws)
        if document["type"] == kind:
            return document


async def events(ws: trio_websocket.WebSocketConnection, count: int) -> list[dict[str, Any]]:
    found = []
    while len(found) < count:
        document = await next_of(ws, "event")
        found.append(document["event"])
    return found


async def say_hello(
    ws: trio_websocket.WebSocketConnection, token: str | None, **resume: Any
) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "hello", "token": token, **resume}))
    return await receive(ws)


async def send_traffic(running: RunningGateway, key: str, count: int, **body: Any) -> None:
    for _ in range(count):
        reply = await post_messages(running.port, key, message_body(**body))
        assert reply.status == 200, reply.body


async def test_liveview_socket_refuses_a_hello_without_token(tmp_path) -> None:
    with trio.fail_after(15):
        async with open_gateway(tmp_path) as running, open_viewer(running) as ws:
            await ws.send_message(json.dumps({"type": "hello"}))
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1008
    assert "token" in (closed.value.reason.reason or "")


async def test_liveview_socket_refuses_a_wrong_token(tmp_path) -> None:
    with trio.fail_after(15):
        async with open_gateway(tmp_path) as running, open_viewer(running) as ws:
            await ws.send_message(
                json.dumps({"type": "hello", "token": "ccag-session-" + "x" * 43})
            )
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1008
    assert "session" in (closed.value.reason.reason or "")


async def test_liveview_socket_without_upgrade_is_426(tmp_path) -> None:
    with trio.fail_after(15):
        async with open_gateway(tmp_path) as running:
            reply = await request(running.port, "GET", "/ui/ws")
    assert reply.status == 426
    assert reply.json()["type"] == "error"


async def test_liveview_socket_admin_sees_requests_without_content(tmp_path) -> None:
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            token = await admin_token(running)
            async with open_viewer(running) as ws:
                welcome = await say_hello(ws, token)
                snapshot = await next_of(ws, "snapshot")
                await send_traffic(running, running.key, 1, text="a secret prompt")
                await send_traffic(running, running.key, 1, stream=True, text="another")
                seen = await events(ws, 2)
                second = await next_of(ws, "second")

    assert welcome["role"] == "admin"
    assert snapshot["events"] == []
    assert [event["streaming"] for event in seen] == [False, True]
    assert seen[0]["seq"] + 1 == seen[1]["seq"]
    first = seen[0]
    assert first["user"] == "tester" and first["key"] == "test-key"
    assert first["status"] == 200 and first["model"] == "claude-sonnet-4-5"
    assert first["output_tokens"] > 0 and first["input_tokens"] > 0
    assert first["duration_ms"] > 0 and first["ttft_ms"] is not None
    assert first["cost_usd"] > 0
    assert "secret" not in json.dumps(seen)
    assert set(second["second"]) >= {"t", "requests", "ttft_p50", "ttft_p99", "in_flight"}


async def test_liveview_socket_member_sees_only_their_own(tmp_path) -> None:
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            alice = await running.new_key("alice-key", user="alice", team="red")
            bob = await running.new_key("bob-key", user="bob", team="blue")
            async with open_viewer(running) as ws:
                welcome = await say_hello(ws, alice)
                await next_of(ws, "snapshot")
                await send_traffic(running, bob, 2)
                await send_traffic(running, alice, 1)
                await send_traffic(running, bob, 1)
                await send_traffic(running, alice, 1)
                seen, spend = [], None
                while len(seen) < 2 or spend is None:
                    message = await receive(ws)
                    if message["type"] == "event":
                        seen.append(message["event"])
                    elif message["type"] == "spend":
                        spend = message

    assert welcome["role"] == "member" and welcome["name"] == "alice"
    assert [event["user"] for event in seen] == ["alice", "alice"]
    assert all(row["kind"] == "user" and row["name"] == "alice" for row in spend["rows"])


async def test_liveview_socket_member_snapshot_holds_only_their_own(tmp_path) -> None:
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            alice = await running.new_key("alice-key", user="alice")
            await send_traffic(running, running.key, 2)
            await send_traffic(running, alice, 1)
            async with open_viewer(running) as ws:
                await say_hello(ws, alice)
                snapshot = await next_of(ws, "snapshot")

    assert [event["user"] for event in snapshot["events"]] == ["alice"]


async def test_liveview_socket_resumes_without_gaps(tmp_path) -> None:
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            token = await admin_token(running)
            async with open_viewer(running) as ws:
                await say_hello(ws, token)
                snapshot = await next_of(ws, "snapshot")
                await send_traffic(running, running.key, 2)
                before = await events(ws, 2)

            # Traffic while the viewer is away.
            await send_traffic(running, running.key, 3)

            async with open_viewer(running) as ws:
                await say_hello(
                    ws, token, epoch=snapshot["epoch"], last_seq=before[-1]["seq"]
                )
                resumed = await receive(ws)
                missed = await events(ws, 3)
                await send_traffic(running, running.key, 1)
                after = await events(ws, 1)

    assert resumed["type"] == "resumed" and resumed["missed"] == 3
    sequence = [event["seq"] for event in before + missed + after]
    assert sequence == list(range(sequence[0], sequence[0] + 6))


async def test_liveview_socket_too_old_or_other_epoch_gets_a_snapshot(tmp_path) -> None:
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            token = await admin_token(running)
            await send_traffic(running, running.key, 2)
            async with open_viewer(running) as ws:
                await say_hello(ws, token, epoch="an-old-epoch", last_seq=1)
                reply = await receive(ws)

    assert reply["type"] == "snapshot"
    assert [event["seq"] for event in reply["events"]] == [1, 2]


async def timed_traffic(running: RunningGateway, count: int) -> float:
    started = time.perf_counter()
    await send_traffic(running, running.key, count)
    return time.perf_counter() - started


async def test_liveview_socket_slow_viewer_gets_summaries_and_costs_nothing(
    tmp_path,
) -> None:
    requests = 150
    with trio.fail_after(60):
        async with open_gateway(tmp_path) as running:
            hub = hub_of(running)
            token = await admin_token(running)
            await send_traffic(running, running.key, 5)  # warm the upstream pool
            baseline = await timed_traffic(running, requests)

            async with open_viewer(running, receive_buffer=4096, message_queue_size=1) as ws:
                await say_hello(ws, token)
                [viewer] = hub.viewers
                with_stalled_viewer = await timed_traffic(running, requests)
                # Big events make the socket back up sooner.
                for _ in range(8):
                    await send_traffic(running, running.key, 50)
                    if viewer.mode is ViewerMode.SUMMARY:
                        break
                mode_while_stalled = viewer.mode
                queued_while_stalled = len(viewer.queue)

                # The viewer starts reading: a lagging notice, then seconds.
                kinds = []
                while "caught_up" not in kinds:
                    kinds.append((await receive(ws))["type"])

    assert mode_while_stalled is ViewerMode.SUMMARY
    assert queued_while_stalled <= hub.max_queued
    assert "lagging" in kinds
    assert "second" in kinds[kinds.index("lagging"):]
    assert with_stalled_viewer < baseline * 3 + 0.5, (baseline, with_stalled_viewer)


async def test_liveview_socket_session_expiry_on_logout_is_rechecked(tmp_path) -> None:
    """A logged-out session cannot open the socket again."""
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            token = await admin_token(running)
            reply = await request(
                running.port, "POST", "/admin/logout",
                headers=[("authorization", "Bearer " + token)],
            )
            assert reply.status in (200, 204)
            async with open_viewer(running) as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": token}))
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
    assert closed.value.reason.code == 1008


async def test_liveview_socket_accepts_bearer_at_handshake(tmp_path) -> None:
    with trio.fail_after(20):
        async with open_gateway(tmp_path) as running:
            token = await admin_token(running)
            async with open_viewer(
                running, extra_headers=[(b"authorization", f"Bearer {token}".encode())]
            ) as ws:
                welcome = await say_hello(ws, None)
    assert welcome["type"] == "welcome" and welcome["role"] == "admin"
