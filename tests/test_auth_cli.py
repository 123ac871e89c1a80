"""``ccag keys create|list|revoke`` against a temporary SQLite store."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import trio

from ccag.auth.cli import register
from ccag.auth.errors import AuthError
from ccag.auth.keys import KeyCache
from ccag.server.types import Headers
from ccag.store import open_store_sync

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_LINE = re.compile(r"sk-ccag-[A-Za-z0-9_-]{43}")


@pytest.fixture
def store_path(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    path = os.path.join(str(tmp_path), "keys", "ccag.sqlite3")
    monkeypatch.setenv("CCAG_STORE", path)
    monkeypatch.delenv("CCAG_CONFIG", raising=False)
    return path


def keys_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ccag")
    register(parser.add_subparsers())
    args = parser.parse_args(["keys", *argv])
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_create_prints_the_key_alone_on_stdout(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    status, out, err = keys_cli(capsys, "create", "alice")

    assert status == 0
    assert KEY_LINE.fullmatch(out.strip())
    assert out.count("\n") == 1
    assert "alice" in err and out.strip() not in err
    assert os.path.exists(store_path)


async def test_created_key_authenticates(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    _, out, _ = keys_cli(capsys, "create", "ci", "--team", "platform", "--role", "admin")

    with open_store_sync(store_path) as store:
        cache = KeyCache(store)
        with trio.fail_after(10):
            await cache.refresh()
        principal = cache.authenticate(Headers((("x-api-key", out.strip()),)), 0.0)

    assert (principal.key_name, principal.team, principal.user, principal.role) == (
        "ci", "platform", None, "admin",
    )


def test_list_shows_table_without_keys(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    _, first, _ = keys_cli(capsys, "create", "alice", "--expires-in", "7")
    _, second, _ = keys_cli(capsys, "create", "build", "--user", "bob", "--team", "ci")

    status, out, _ = keys_cli(capsys, "list")

    lines = out.strip().splitlines()
    assert status == 0
    assert lines[0].split() == [
        "NAME", "ID", "PREFIX", "OWNER", "ROLE", "CREATED", "EXPIRES", "STATUS",
    ]
    assert lines[1].startswith("alice ") and lines[1].endswith("active")
    assert first.strip()[:12] in lines[1] and "never" not in lines[1]
    assert "bob (team ci)" in lines[2] and "never" in lines[2]
    assert first.strip() not in out and second.strip() not in out


def test_list_json(capsys: pytest.CaptureFixture[str], store_path: str) -> None:
    keys_cli(capsys, "create", "alice", "--role", "admin")

    status, out, _ = keys_cli(capsys, "list", "--json")

    [row] = json.loads(out)
    assert status == 0
    assert row["name"] == "alice" and row["user"] == "alice" and row["role"] == "admin"
    assert row["status"] == "active" and row["revoked_at"] is None
    assert row["prefix"].startswith("sk-ccag-") and len(row["prefix"]) == 12


def test_revoke_by_name_then_by_id(capsys: pytest.CaptureFixture[str], store_path: str) -> None:
    keys_cli(capsys, "create", "alice")
    keys_cli(capsys, "create", "bob")
    [bob] = [r for r in json.loads(keys_cli(capsys, "list", "--json")[1]) if r["name"] == "bob"]

    assert keys_cli(capsys, "revoke", "alice")[0] == 0
    assert keys_cli(capsys, "revoke", bob["id"])[0] == 0
    status, _, err = keys_cli(capsys, "revoke", "alice")

    assert status == 1 and "no live key" in err
    rows = json.loads(keys_cli(capsys, "list", "--json")[1])
    assert [row["status"] for row in rows] == ["revoked", "revoked"]


def test_create_duplicate_live_name_fails(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    keys_cli(capsys, "create", "alice")

    status, out, err = keys_cli(capsys, "create", "alice")

    assert status == 1 and out == "" and "exists" in err


def test_create_rejects_non_positive_expiry(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    status, out, err = keys_cli(capsys, "create", "alice", "--expires-in", "0")
    assert status == 2 and out == "" and "--expires-in" in err


def test_store_flag_beats_environment(
    capsys: pytest.CaptureFixture[str], store_path: str, tmp_path: Any
) -> None:
    other = os.path.join(str(tmp_path), "other.sqlite3")
    keys_cli(capsys, "create", "alice", "--store", other)

    status, out, err = keys_cli(capsys, "list", "--json")
    assert (status, out) == (1, "") and f"no store at {store_path}" in err
    assert len(json.loads(keys_cli(capsys, "list", "--json", "--store", other)[1])) == 1


def test_python_m_ccag_keys_round_trip(store_path: str) -> None:
    def ccag(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ccag", "keys", *argv],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "CCAG_STORE": store_path},
        )

    created = ccag("create", "laptop", "--user", "carol")
    listed = ccag("list")
    revoked = ccag("revoke", "laptop")

    assert created.returncode == 0, created.stderr
    assert KEY_LINE.fullmatch(created.stdout.strip())
    assert "laptop" in listed.stdout and created.stdout.strip() not in listed.stdout
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in ccag("list").stdout


async def test_revoked_key_is_refused_after_refresh(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    _, out, _ = keys_cli(capsys, "create", "alice")
    keys_cli(capsys, "revoke", "alice")

    with open_store_sync(store_path) as store:
        cache = KeyCache(store)
        with trio.fail_after(10):
            await cache.refresh()
        with pytest.raises(AuthError) as caught:
            cache.authenticate(Headers((("x-api-key", out.strip()),)), 0.0)

    assert caught.value.reason == "revoked_key"
