"""``POST /auth/login``: what a client sees, in-process and over a real socket."""

from __future__ import annotations

import json
from typing import Any

import h11
import pytest
import trio

from ccag.auth.keys import KeyCache, format_time
from ccag.auth.login import login_handler
from ccag.auth.sessions import (
    MAX_LOGIN_FAILURES,
    SESSION_PREFIX,
    SessionManager,
    ensure_bootstrap_admin,
)
from ccag.config import load_config
from ccag.server import serve
from ccag.server.types import Headers, Request
from ccag.store import Store

PASSWORD = "s3cret-admin-password"


class RecordingResponder:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.is_ended = False

    @property
    def is_started(self) -> bool:
        return self.status is not None

    @property
    def body_flushed(self) -> bool:
        return bool(self.body)

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = dict(headers)

    async def send_data(self, data: bytes) -> None:
        self.body += data

    async def end_response(self) -> None:
        self.is_ended = True

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        assert int(self.headers["content-length"]) == len(self.body)
        return json.loads(self.body)


def _request(body: bytes, client: str = "127.0.0.1") -> Request:
    return Request(
        method="POST", target="/auth/login", path="/auth/login", query="",
        headers=Headers((("content-type", "application/json"),)), body=body,
        http_version="1.1", client=(client, 50000), started_at=0.0, request_id="req_test",
    )


def _login_body(username: str = "admin", password: str = PASSWORD) -> bytes:
    return json.dumps({"username": username, "password": password}).encode()


@pytest.fixture
async def sessions(store: Store) -> SessionManager:
    config = load_config({"admin_password": PASSWORD, "port": 0}, environ={})
    await ensure_bootstrap_admin(store, config)
    keys = KeyCache(store)
    await keys.refresh()
    return SessionManager(store, config, keys)


async def _post(sessions: SessionManager, body: bytes, failures: list[str] | None = None,
                client: str = "127.0.0.1") -> RecordingResponder:
    responder = RecordingResponder()
    with trio.fail_after(10):
        await login_handler(_request(body, client), responder, sessions,
                            record_failure=None if failures is None else failures.append)
    assert responder.is_ended
    return responder


async def test_login_returns_token_and_expiry(sessions: SessionManager) -> None:
    responder = await _post(sessions, _login_body())

    body = responder.json()
    assert responder.status == 200
    assert responder.headers["cache-control"] == "no-store"
    assert body["token"].startswith(SESSION_PREFIX)
    assert body["expires_at"].endswith("Z")
    headers = Headers((("authorization", f"Bearer {body['token']}"),))
    principal = await sessions.authorize_admin(headers, 1.0)
    assert principal.user == "admin"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b"[]", b'{"username": "admin"}',
     b'{"username": "", "password": "x"}', b'{"username": 1, "password": "x"}',
     json.dumps({"username": "admin", "password": "x" * 5000}).encode()],
)
async def test_login_malformed_body_is_400(sessions: SessionManager, body: bytes) -> None:
    responder = await _post(sessions, body)

    assert responder.status == 400
    assert responder.json()["error"]["type"] == "invalid_request_error"
    assert responder.json()["request_id"] == "req_test"


async def test_login_bad_credentials_is_401(sessions: SessionManager) -> None:
    failures: list[str] = []
    responder = await _post(sessions, _login_body(password="wrong"), failures)

    assert responder.status == 401
    assert responder.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid username or password"},
        "request_id": "req_test",
    }
    assert failures == ["login_failed"]


async def test_login_throttled_is_429_with_retry_after(sessions: SessionManager) -> None:
    failures: list[str] = []
    for _ in range(MAX_LOGIN_FAILURES):
        await _post(sessions, _login_body(password="wrong"), failures, client="198.51.100.1")
    responder = await _post(sessions, _login_body(), failures, client="198.51.100.1")

    assert responder.status == 429
    assert responder.json()["error"]["type"] == "rate_limit_error"
    assert int(responder.headers["retry-after"]) > 0
    assert failures == ["login_failed"] * (MAX_LOGIN_FAILURES + 1)


async def _http_post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    client = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(client.send(h11.Request(
            method="POST", target=path,
            headers=[("host", "127.0.0.1"), ("content-type", "application/json"),
                     ("content-length", str(len(body))), ("connection", "close")],
        )) + client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage()))
        status, received = 0, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                received += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return status, received


async def test_login_over_a_real_socket(sessions: SessionManager) -> None:
    async def handler(request: Request, responder: Any) -> None:
        await login_handler(request, responder, sessions)

    config = load_config({"port": 0}, environ={})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, handler, config)
            good = await _http_post(port, "/auth/login", _login_body())
            bad = await _http_post(port, "/auth/login", _login_body(password="nope"))
            nursery.cancel_scope.cancel()

    assert good[0] == 200 and json.loads(good[1])["token"].startswith(SESSION_PREFIX)
    assert bad[0] == 401 and json.loads(bad[1])["error"]["type"] == "authentication_error"


def test_format_time_is_rfc3339_utc() -> None:
    assert format_time(0) == "1970-01-01T00:00:00Z"
