"""``ccag admin ...`` against a running gateway, as a subprocess and in-process."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import trio

from ccag.admin_cli import UsageError, parse_duration
from tests.admin_fixture import ADMIN_PASSWORD, ccag_admin, login
from tests.e2e_client import request
from tests.gateway_fixture import RunningGateway, open_gateway

TIMEOUT = 30


async def ccag_process(
    argv: list[str], env: dict[str, str], stdin: bytes = b""
) -> tuple[int, str, str]:
    """``python -m ccag ARGV`` in a subprocess: (exit status, stdout, stderr)."""
    result = await trio.run_process(
        [sys.executable, "-m", "ccag", *argv],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def models_status(running: RunningGateway, key: str) -> int:
    reply = await request(
        running.port, "GET", "/v1/models", headers=[("x-api-key", key)]
    )
    return reply.status


def test_parse_duration_units_and_refusals() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 90 * 60
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("1.5") == 1.5 * 86400
    for text in ("", "0d", "-1d", "3y", "d", "1 day"):
        with pytest.raises(UsageError):
            parse_duration(text)


async def test_admin_cli_login_stores_a_private_token_that_later_commands_use(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            env = {"CCAG_URL": running.url, "XDG_CONFIG_HOME": str(tmp_path / "config")}
            status, out, err = await ccag_process(
                ["admin", "login", "--password-stdin"],
                env,
                stdin=ADMIN_PASSWORD.encode() + b"\n",
            )
            assert status == 0, err
            assert "logged in" in err
            token_file = tmp_path / "config" / "ccag" / "admin-sessions.json"
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert json.loads(token_file.read_text())[running.url]["token"].startswith(
                "ccag-session-"
            )

            status, out, err = await ccag_process(
                [
                    "admin",
                    "keys",
                    "create",
                    "laptop",
                    "--user",
                    "tester",
                    "--expires-in",
                    "30d",
                ],
                env,
            )
            assert status == 0, err
            key = out.strip()
            assert out == key + "\n" and key.startswith("sk-ccag-")
            assert "created key 'laptop'" in err and "expires" in err
            assert await models_status(running, key) == 200

            status, out, err = await ccag_process(["admin", "whoami", "--json"], env)
            assert status == 0 and json.loads(out)["user"] == "admin"

            status, out, err = await ccag_process(["admin", "logout"], env)
            assert status == 0, err
            assert running.url not in json.loads(token_file.read_text())
            status, out, err = await ccag_process(["admin", "keys", "list"], env)
            assert status == 2 and "not logged in" in err


async def test_admin_cli_keys_list_update_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            token = await login(running.port)
            conn = ["--url", running.url, "--token", token]

            status, out, err = await ccag_admin(
                capsys, ["keys", "create", "ci", "--user", "tester", "--json", *conn]
            )
            created = json.loads(out)
            assert status == 0 and created["key"].startswith("sk-ccag-")

            status, out, err = await ccag_admin(capsys, ["keys", "list", *conn])
            lines = out.splitlines()
            assert status == 0
            assert lines[0].split()[:3] == ["NAME", "ID", "PREFIX"]
            assert [line.split()[0] for line in lines[1:]] == ["test-key", "ci"]
            assert created["key"] not in out

            status, out, err = await ccag_admin(
                capsys,
                [
                    "keys",
                    "update",
                    "ci",
                    "--name",
                    "ci-2",
                    "--role",
                    "admin",
                    "--json",
                    *conn,
                ],
            )
            assert status == 0 and json.loads(out)["name"] == "ci-2"
            assert json.loads(out)["role"] == "admin"

            status, out, err = await ccag_admin(
                capsys, ["keys", "revoke", "ci-2", *conn]
            )
            assert status == 0 and "revoked key 'ci-2'" in err
            assert await models_status(running, created["key"]) == 401
            status, out, err = await ccag_admin(
                capsys, ["keys", "revoke", created["id"], *conn]
            )
            assert status == 1 and "already revoked (HTTP 409)" in err

            status, out, err = await ccag_admin(
                capsys, ["keys", "list", "--status", "revoked", "--json", *conn]
            )
            assert [k["name"] for k in json.loads(out)["keys"]] == ["ci-2"]
            status, out, err = await ccag_admin(
                capsys, ["keys", "update", "test-key", *conn]
            )
            assert status == 2 and "nothing to update" in err


async def test_admin_cli_users_and_teams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            environ = {
                "CCAG_URL": running.url,
                "CCAG_ADMIN_TOKEN": await login(running.port),
            }

            assert (await ccag_admin(capsys, ["teams", "create", "eng"], environ))[
                0
            ] == 0
            monkeypatch.setattr(sys, "stdin", io.StringIO("alice-password-1\n"))
            status, out, err = await ccag_admin(
                capsys,
                ["users", "create", "alice", "--team", "eng", "--password-stdin"],
                environ,
            )
            assert status == 0, err
            assert out.split("\n")[1].split()[:4] == ["alice", "member", "eng", "True"]
            await login(running.port, "alice", "alice-password-1")

            status, out, err = await ccag_admin(
                capsys, ["users", "list", "--json"], environ
            )
            assert [u["name"] for u in json.loads(out)["users"]] == [
                "admin",
                "alice",
                "tester",
            ]
            status, out, err = await ccag_admin(capsys, ["teams", "list"], environ)
            assert out.splitlines()[1].split()[:2] == ["eng", "alice"]

            status, out, err = await ccag_admin(
                capsys, ["keys", "create", "a1", "--user", "alice"], environ
            )
            assert status == 0
            status, out, err = await ccag_admin(
                capsys, ["users", "delete", "alice"], environ
            )
            assert status == 1 and "live key(s)" in err and "HTTP 409" in err
            status, out, err = await ccag_admin(
                capsys, ["users", "delete", "alice", "--force"], environ
            )
            assert status == 0 and "deleted user 'alice'" in err

            status, out, err = await ccag_admin(
                capsys, ["teams", "rename", "eng", "platform", "--json"], environ
            )
            assert json.loads(out)["name"] == "platform"
            status, out, err = await ccag_admin(
                capsys, ["users", "create", "bob", "--team", "ops"], environ
            )
            assert status == 1 and "team 'ops' does not exist" in err
            status, out, err = await ccag_admin(
                capsys, ["teams", "delete", "platform"], environ
            )
            assert status == 0
            status, out, err = await ccag_admin(
                capsys, ["teams", "show", "platform"], environ
            )
            assert status == 1 and "no team named 'platform' (HTTP 404)" in err


async def test_admin_cli_reports_usage_and_connection_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            environ = {
                "CCAG_URL": running.url,
                "XDG_CONFIG_HOME": str(tmp_path / "none"),
            }
            monkeypatch.setattr(sys, "stdin", io.StringIO("not-the-password\n"))
            status, _, err = await ccag_admin(
                capsys, ["login", "--password-stdin"], environ
            )
            assert status == 1 and "invalid username or password (HTTP 401)" in err
            assert not (tmp_path / "none").exists()
            status, _, err = await ccag_admin(capsys, ["keys", "list"], environ)
            assert status == 2 and "not logged in to " + running.url in err

            environ["CCAG_ADMIN_TOKEN"] = await login(running.port)
            status, _, err = await ccag_admin(
                capsys,
                ["keys", "create", "k", "--user", "tester", "--expires-in", "soon"],
                environ,
            )
            assert status == 2 and "not a duration" in err

            status, _, err = await ccag_admin(
                capsys, ["keys", "list", "--token", "nonsense"], environ
            )
            assert status == 1 and "HTTP 401" in err

            status, _out, err = await ccag_admin(
                capsys, ["keys", "list", "--url", "ftp://x"], environ
            )
            assert status == 1 and "--url must be" in err

    # The gateway is gone: its port refuses connections now.
    with trio.fail_after(TIMEOUT):
        status, _, err = await ccag_admin(
            capsys, ["keys", "list", "--url", running.url, "--token", "t"]
        )
        assert status == 1 and "cannot reach the gateway" in err


async def test_a_member_changes_their_password_with_the_current_one(tmp_path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            token = await login(running.port)
            url = running.url
            admin_env = {"CCAG_URL": url, "CCAG_ADMIN_TOKEN": token, "HOME": str(tmp_path)}
            status, _, err = await ccag_process(
                ["admin", "users", "create", "alice", "--password-stdin"],
                admin_env, stdin=b"first-password\n",
            )
            assert status == 0, err
            alice_key = await running.new_key("alice-key", user="alice")
            alice_env = {"CCAG_URL": url, "CCAG_ADMIN_TOKEN": alice_key, "HOME": str(tmp_path)}

            refused, _, refused_err = await ccag_process(
                ["admin", "users", "update", "alice", "--password-stdin"],
                alice_env, stdin=b"second-password\n",
            )
            changed, _, changed_err = await ccag_process(
                ["admin", "users", "update", "alice", "--password-stdin", "--current-password"],
                alice_env, stdin=b"second-password\nfirst-password\n",
            )
            logged_in = await request(
                running.port, "POST", "/auth/login",
                headers=[("content-type", "application/json")],
                body=json.dumps({"username": "alice", "password": "second-password"}).encode(),
            )

    assert refused == 1 and "current_password" in refused_err
    assert changed == 0, changed_err
    assert logged_in.status == 200
