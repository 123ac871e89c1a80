"""Helpers for tests of the admin API: log in, call ``/admin`` as someone."""

from __future__ import annotations

import functools
import json
from typing import Any

import attrs
import pytest
import trio

from ccag.cli import build_parser
from tests.e2e_client import Reply, flat_snapshot, request

ADMIN_PASSWORD = "test-admin-password"


async def login(port: int, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    """A session token for this user (the login must succeed)."""
    reply = await request(
        port, "POST", "/auth/login",
        headers=[("content-type", "application/json")],
        body=json.dumps({"username": username, "password": password}).encode(),
    )
    assert reply.status == 200, reply.body
    return str(reply.json()["token"])


async def ccag_admin(
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environ: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """``ccag admin ARGV`` in this process (in a thread: the CLI blocks)."""
    args = build_parser().parse_args(["admin", *argv])
    status = await trio.to_thread.run_sync(
        functools.partial(args.func, args, environ or {})
    )
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@attrs.define
class Caller:
    """Someone calling the admin API with one bearer credential."""

    port: int
    credential: str | None

    async def call(
        self, method: str, path: str, document: Any = None, *, raw: bytes | None = None
    ) -> Reply:
        headers = [("content-type", "application/json")]
        if self.credential is not None:
            headers.append(("authorization", f"Bearer {self.credential}"))
        body = raw if raw is not None else (
            b"" if document is None else json.dumps(document).encode()
        )
        return await request(self.port, method, path, headers=headers, body=body)

    async def ok(self, method: str, path: str, document: Any = None, status: int = 200) -> Any:
        """The JSON answer of a call that must succeed with ``status``."""
        reply = await self.call(method, path, document)
        assert reply.status == status, (method, path, reply.status, reply.body[:400])
        assert reply.headers.get("cache-control") == "no-store"
        return reply.json()


async def as_admin(port: int) -> Caller:
    return Caller(port, await login(port))


def auth_failures(telemetry: Any) -> dict[str, int]:
    """``ccag.auth_failures.total`` by reason."""
    return {
        dict(labels)["reason"]: int(value)
        for (name, labels), value in flat_snapshot(telemetry).items()
        if name == "ccag.auth_failures.total"
    }
