"""``ccag admin`` users read advice they can follow in the CLI, not only in the API."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.admin_fixture import ccag_admin, login
from tests.gateway_fixture import open_gateway

TIMEOUT = 30


async def test_deleting_a_team_or_user_with_live_keys_names_the_force_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            conn = ["--url", running.url, "--token", await login(running.port)]
            assert (await ccag_admin(capsys, ["teams", "create", "platform", *conn]))[0] == 0
            assert (await ccag_admin(capsys, ["users", "create", "carol", "--team", "platform", *conn]))[0] == 0
            created = await ccag_admin(capsys, ["keys", "create", "k1", "--user", "carol", *conn])
            assert created[0] == 0, created[2]

            for kind, name in (("teams", "platform"), ("users", "carol")):
                status, _, err = await ccag_admin(capsys, [kind, "delete", name, *conn])
                assert status == 1 and "HTTP 409" in err
                assert "--force" in err, err

            status, _, err = await ccag_admin(capsys, ["teams", "delete", "platform", "--force", *conn])
            assert status == 0, err


async def test_naming_a_missing_user_or_team_says_how_to_create_it_with_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            conn = ["--url", running.url, "--token", await login(running.port)]

            status, _, err = await ccag_admin(capsys, ["keys", "create", "k1", "--user", "nobody", *conn])
            assert status == 1 and "HTTP 400" in err
            assert "ccag admin users create" in err, err

            status, _, err = await ccag_admin(capsys, ["users", "create", "dave", "--team", "ops", *conn])
            assert status == 1 and "HTTP 400" in err
            assert "ccag admin teams create" in err, err
